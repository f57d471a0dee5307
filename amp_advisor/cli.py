"""The command line: parse, call the library, print. No logic of its own.

Errors: a BadInputError (or any AdvisorError) becomes one line on stderr and exit code 2;
--debug shows the traceback instead. Machine-readable output (--json) goes to stdout alone;
progress goes to stderr.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from . import __version__
from .errors import AdvisorError

_DEBUG_KEY = "amp_advisor.debug"


def _set_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.meta[_DEBUG_KEY] = True  # ctx.meta is shared by the group and its commands
    return value


debug_option = click.option(
    "--debug", is_flag=True, expose_value=False, is_eager=True, callback=_set_debug,
    help="Show full tracebacks instead of one-line errors.",
)


class AdvisorGroup(click.Group):
    """Turns the library's errors into one line and exit code 2 at the outer edge."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AdvisorError as exc:
            if ctx.meta.get(_DEBUG_KEY):
                raise
            raise click.exceptions.UsageError(str(exc)) from None  # exit code 2, one line


@click.group(cls=AdvisorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="amp-advisor")
@debug_option
def cli() -> None:
    """Tell how to use mixed precision on this machine: probe the hardware, measure, recommend."""


@cli.command()
@click.option(
    "--device", default="all", show_default=True, metavar="DEVICE",
    help="What to probe: all, cpu, cuda, cuda:N or mps.",
)
@click.option(
    "--bench", is_flag=True,
    help="Also run a bounded matmul micro-benchmark per dtype: measured TFLOP/s and speed vs fp32.",
)
@click.option(
    "--bench-seconds", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
    help="Time budget per device for --bench [default: 1.5 on CPU, 3 on a GPU].",
)
@click.option("--json", "as_json", is_flag=True, help="Print a schema-versioned JSON document instead of tables.")
@debug_option
def probe(device: str, bench: bool, bench_seconds: float | None, as_json: bool) -> None:
    """What this machine does with fp32, tf32, fp16, bf16 and fp8, per device.

    For each GPU and the CPU: identity, whether each dtype runs at all (supported), whether it has
    a native hardware path (fast: tensor cores, native bf16, AMX...), why, the vendor's peak
    rates when the device is known, and a suggested training dtype.
    """
    from .hardware import parse_device, probe as run_probe
    from .hardware.render import render_profile

    parse_device(device)  # bad input fails before any slow work
    progress = _StderrProgress() if bench else None
    profile = run_probe(device, bench=bench, bench_seconds=bench_seconds, on_progress=progress)
    if progress is not None:
        progress.done()
    if as_json:
        click.echo(json.dumps(profile.to_dict(), indent=2))
    else:
        click.echo(render_profile(profile))


class _StderrProgress:
    """One status line on stderr, rewritten in place on a terminal, a line per step otherwise."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        self._shown = False

    def __call__(self, label: str) -> None:
        text = f"benchmarking {label} ..."
        if self._tty:
            click.echo(f"\r\033[K{text}", err=True, nl=False)
        else:
            click.echo(text, err=True)
        self._shown = True

    def done(self) -> None:
        if self._tty and self._shown:
            click.echo("\r\033[K", err=True, nl=False)


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="amp-advisor", standalone_mode=False)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except AdvisorError:
        raise  # only with --debug: the group turns these into usage errors otherwise
    except Exception as exc:
        if "--debug" in (argv if argv is not None else sys.argv[1:]):
            raise
        click.echo(f"amp-advisor: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
