"""The `sbexport` command line. Thin: parse, call the library, print. Every user-facing failure
is an SbexportError, printed as one line on stderr with exit status 1 (click's usage errors
exit 2)."""

from __future__ import annotations

import sys

import click

from .errors import SbexportError
from .tasks import TASKS


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sbexport")
def cli() -> None:
    """Export SqueezeBERT to ONNX and ExecuTorch, prove parity, benchmark against BERT-base.

    \b
    Example:
      sbexport onnx --task mnli --random-init -o artifacts/mnli-onnx
    """


def main() -> None:
    """Console-script entry point: run the CLI, turn SbexportError into one line and exit 1."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except SbexportError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)


TASK_CHOICE = click.Choice(list(TASKS))
