"""Click subcommands of ``hintset``, one module each (registered in ``pipeline.cli.COMMANDS``)."""
