"""The ``hintset`` command line: a click group whose subcommands load on first use.

Each subcommand lives in ``pipeline/commands/<name>.py`` (or ``training/``) and is
listed in ``COMMANDS``; heavy libraries are imported inside the commands, so
``hintset --help`` is instant.
"""

from __future__ import annotations

import importlib

import click

#: command name -> "module:attribute" of its click command
COMMANDS: dict[str, str] = {
    "annotate": "pipeline.commands.annotate:annotate",
    "annotators": "pipeline.commands.annotators:annotators",
    "build": "pipeline.commands.build:build",
    "inspect": "pipeline.commands.inspect:inspect_cmd",
    "preview": "pipeline.commands.preview:preview",
    "verify": "pipeline.commands.verify:verify",
    "weights": "pipeline.commands.weights:weights",
    "tiny-base": "training.cli:tiny_base",
    "train": "training.cli:train",
    "export": "training.cli:export",
    "evaluate": "evaluation.cli:evaluate",
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when it is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hintset", message="hintset %(version)s")
def main() -> None:
    """hintset: build ControlNet training data (image, caption, condition maps) and train ControlNets.

    \b
    Annotate a folder:   hintset annotate photos/ -o maps/ --annotators canny,lines
    List annotators:     hintset annotators
    """


if __name__ == "__main__":
    main()
