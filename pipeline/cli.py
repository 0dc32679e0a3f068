"""The ``hintset`` command line: a click group whose subcommands load on first use.

Each subcommand lives in ``pipeline/commands/<name>.py`` (or ``training/``) and is
listed in ``COMMANDS``; heavy libraries are imported inside the commands, so
``hintset --help`` is instant.
"""

from __future__ import annotations

import functools
import importlib
import sys

import click

#: command name -> "module:attribute" of its click command
COMMANDS: dict[str, str] = {
    "annotate": "pipeline.commands.annotate:annotate",
    "annotators": "pipeline.commands.annotators:annotators",
    "build": "pipeline.commands.build:build",
    "inspect": "pipeline.commands.inspect:inspect_cmd",
    "presets": "pipeline.commands.presets:presets",
    "preview": "pipeline.commands.preview:preview",
    "verify": "pipeline.commands.verify:verify",
    "weights": "pipeline.commands.weights:weights",
    "tiny-base": "training.cli:tiny_base",
    "train": "training.cli:train",
    "cache": "training.cli:cache",
    "export": "training.cli:export",
    "evaluate": "evaluation.cli:evaluate",
}

#: command name -> (module, pip extra) pairs it imports; checked before the command runs
NEEDS: dict[str, tuple[tuple[str, str], ...]] = {
    name: (
        ("torch", "train"),
        ("diffusers", "train"),
        ("transformers", "train"),
        ("accelerate", "train"),
    )  # fmt: skip
    for name in ("tiny-base", "train", "cache", "export")
}


def with_extras_check(command: click.Command, requires: tuple[tuple[str, str], ...]) -> None:
    """Make ``command`` stop with one line and exit code 2 when a package it needs is missing
    (``hintset train needs torch (not installed): pip install 'hintset[train]'``); --help works."""
    callback = command.callback
    if callback is None or getattr(callback, "checks_extras", False):
        return

    @functools.wraps(callback)
    def checked(*args, **kwargs):
        from annotators.extras import MissingExtra, check_extras

        try:
            check_extras(f"hintset {command.name}", requires)
        except MissingExtra as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(2)
        return callback(*args, **kwargs)

    checked.checks_extras = True  # type: ignore[attr-defined]
    command.callback = checked


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when it is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module), attr)
        if cmd_name in NEEDS:
            with_extras_check(command, NEEDS[cmd_name])
        return command


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
