"""The `rmtension` command. Every user-facing error is one line on stderr and a non-zero exit."""

from __future__ import annotations

import sys

import typer

from rmtension.errors import RmtensionError

app = typer.Typer(
    name="rmtension",
    help="Helpfulness/harmlessness tension in reward models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _mount() -> None:
    """Sub-command groups live next to the code they drive."""
    from rmtension.data.cli import app as data_app

    app.add_typer(data_app, name="data", help="Inspect preference data.")


def main(argv: list[str] | None = None) -> int:
    _mount()
    try:
        app(args=argv, standalone_mode=False)
    except RmtensionError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:  # typer/click exits for --help and usage errors
        return int(e.code or 0)
    except Exception as e:  # click usage errors etc.
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            return e.exit_code
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
