"""The command line: parse, call the library, print. No logic of its own.

Errors: a BadInputError (or any AdvisorError) becomes one line on stderr and exit code 2;
--debug shows the traceback instead. Machine-readable output (--json) goes to stdout alone;
progress goes to stderr.
"""

from __future__ import annotations

import math
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import click

from . import __version__
from .console import StatusLine, TuneDisplay, print_out  # rich only: no torch
from .diagnosis import DEFAULT_STEPS as DEFAULT_DIAGNOSE_STEPS
from .distributed.policy import COMMS, DEFAULT_COLLECTIVE_TIMEOUT_S, Parallel  # facts only: no torch
from .dtypes import DEFAULT_GROWTH_INTERVAL, DEFAULT_INIT_SCALE, TRAINING_DTYPE_NAMES, Dtype
from .errors import AdvisorError, BadInputError, Interrupted, raise_interrupted
from .harness.reaper import signal_on_parent_death  # no torch
from .harness.trial import Status  # plain data: no torch
from .jsonio import dumps
from .levers import names as lever_names  # plain declarations: no torch
from .limits import MAX_BATCH_SIZE, MAX_BENCH_SECONDS, MAX_INIT_SCALE, MAX_STEPS, MAX_TRIAL_TIMEOUT_S
from .snippets import FORMATS as SNIPPET_FORMATS  # text only: cheap to import
from .tuning.phases import FINISH_TRIALS, MIN_SEARCH_TRIALS, SEARCH_SHARE
from .tuning.runner import COMPARE_STEPS
from .tuning.settings import DEFAULT_TRAIN_STEPS, TuneSettings
from .tuning.space import describe_default_batch_sizes  # the tuning modules import no torch: cheap

LEVER_NAMES = lever_names()


class Finite(click.FloatRange):
    """A float option, finite and in range: click's FloatRange lets nan (and, unbounded, inf)
    through, and no setting is infinite."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number

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
    "--bench-seconds", type=Finite(min=0, min_open=True, max=MAX_BENCH_SECONDS), default=None,
    metavar="SECONDS",
    help=f"Time budget per device for --bench [default: 1.5 on CPU, 3 on a GPU; at most {MAX_BENCH_SECONDS:g}].",
)
@click.option("--json", "as_json", is_flag=True, help="Print a schema-versioned JSON document instead of tables.")
@debug_option
def probe(device: str, bench: bool, bench_seconds: float | None, as_json: bool) -> None:
    """What this machine does with fp32, tf32, fp16, bf16 and fp8, per device.

    For each GPU and the CPU: identity, whether each dtype runs at all (supported), whether it has
    a native hardware path (fast: tensor cores, native bf16, AMX...), why, the vendor's peak
    rates when the device is known, and a suggested training dtype.
    """
    from .hardware import probe as run_probe
    from .hardware.render import render_profile

    progress = StatusLine(prefix="benchmarking ") if bench else None
    profile = run_probe(device, bench=bench, bench_seconds=bench_seconds, on_progress=progress)
    if progress is not None:
        progress.done()
    if as_json:
        click.echo(dumps(profile.to_dict()))
    else:
        print_out(render_profile(profile))


def _parallel_options(command: Callable) -> Callable:
    """--parallel, --nproc-per-node, --collective-timeout (tune and bench)."""
    for option in reversed([
        click.option("--parallel", type=click.Choice([p.value for p in Parallel]),
                     help="Measure under torch.distributed, every rank training the trial: ddp (DDP, gradient "
                          "all-reduce in fp32 or compressed) or fsdp2 (fully_shard with a MixedPrecisionPolicy). "
                          "Run under `torchrun ... -m amp_advisor`, or give --nproc-per-node. Batch sizes are per "
                          "rank."),
        click.option("--nproc-per-node", type=click.IntRange(1, 1024), metavar="N",
                     help="With --parallel: start N ranks on this node through torch's launcher (as torchrun "
                          "--standalone --nproc_per_node N) [default: 1]."),
        click.option("--collective-timeout", type=Finite(0, MAX_TRIAL_TIMEOUT_S, min_open=True),
                     default=DEFAULT_COLLECTIVE_TIMEOUT_S, show_default=True, metavar="SECONDS",
                     help="With --parallel: how long a rank waits in a collective for a rank that stopped before "
                          "the trial is failed, naming that rank."),
    ]):
        command = option(command)
    return command


def _launch_if_needed(command: str, parallel: str | None, nproc_per_node: int | None) -> None:
    """Outside torchrun, --parallel (or --nproc-per-node) starts the ranks here and exits with
    the run's code; under torchrun (or on one process) it returns and the command runs."""
    from .distributed.env import RankEnv, check_rank_count, launch

    under_launcher = RankEnv.from_environ() is not None
    if nproc_per_node is not None and parallel is None:
        raise BadInputError("--nproc-per-node starts ranks for --parallel ddp or fsdp2: pass one of them too")
    if parallel is None or under_launcher:
        if nproc_per_node is not None:
            raise BadInputError("--nproc-per-node: this process is already a rank under torchrun; give the number "
                                "of processes to torchrun (--nproc_per_node) instead")
        return
    check_rank_count(nproc_per_node or 1)  # before any process starts
    ctx = click.get_current_context()
    argv = [command]
    for param in ctx.command.params:
        name = param.name or ""
        if name in ("nproc_per_node", "debug") or name not in ctx.params \
                or ctx.get_parameter_source(name) is not click.core.ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[name]
        if isinstance(param, click.Argument):
            argv.append(str(value))
        elif isinstance(param, click.Option) and param.is_flag:
            argv += [max(param.opts, key=len)] if value else []
        elif isinstance(param, click.Option):
            argv += [max(param.opts, key=len), str(value)]
    if ctx.meta.get(_DEBUG_KEY):
        argv.append("--debug")
    sys.exit(launch(nproc_per_node or 1, argv))


def _workload_options(command: Callable) -> Callable:
    """MODEL, --example and the Hugging Face options (bench, diagnose, tune); the command gets one
    `workload` argument (a WorkloadSource, or None when none was given)."""
    import functools

    from .hf import DEFAULT_SEQ_LEN, SIZES, SMALL, TASKS

    @functools.wraps(command)
    def wrapped(**kwargs: Any) -> Any:
        given = {name: kwargs.pop(name) for name in list(kwargs)
                 if name in ("model", "example", "hf") or name.startswith("hf_")}  # the options below
        kwargs["workload"] = _workload(**given)
        return command(**kwargs)

    small = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in SMALL.items())
    for option in reversed([
        click.argument("model", required=False, type=click.Path(dir_okay=False, path_type=str)),
        click.option("--example", metavar="NAME", help="A built-in workload instead of MODEL: mlp, convnet or "
                                                       "transformer."),
        click.option("--hf", metavar="ARCH", help="A Hugging Face architecture instead of MODEL, built offline from "
                                                  "AutoConfig.for_model(ARCH) with random weights and inputs, e.g. "
                                                  "gpt2, bert, llama, t5 (needs transformers: pip install "
                                                  "'amp-advisor[hf]')."),
        click.option("--hf-config", metavar="PATH", type=click.Path(path_type=str),
                     help="A Hugging Face model from a local config.json (or a model directory), at the file's own "
                          "sizes unless the size options say otherwise."),
        click.option("--hf-task", type=click.Choice(TASKS),
                     help="What the model is trained for [default: seq2seq for encoder-decoders, else masked-lm, "
                          "causal-lm, classification: the first the architecture has]."),
        click.option("--hf-size", type=click.Choice(SIZES),
                     help=f"Start from a small shape ({small}) or the config's own sizes [default: small for --hf, "
                          "config for --hf-config]."),
        click.option("--hf-layers", type=click.IntRange(1), metavar="N", help="Layers (each of encoder and decoder)."),
        click.option("--hf-hidden", type=click.IntRange(1), metavar="N",
                     help="Hidden size; feed-forward widths follow in the architecture's ratio."),
        click.option("--hf-heads", type=click.IntRange(1), metavar="N", help="Attention heads."),
        click.option("--hf-vocab", type=click.IntRange(1), metavar="N", help="Vocabulary size."),
        click.option("--hf-seq-len", type=click.IntRange(1), metavar="N",
                     help=f"Tokens per sample [default: {SMALL['seq_len']} at --hf-size small, else "
                          f"{DEFAULT_SEQ_LEN} or fewer when the model has fewer positions]."),
    ]):
        wrapped = option(wrapped)
    return wrapped


def _workload(model: str | None, example: str | None, hf: str | None, hf_config: str | None,
              **hf_options: Any) -> Any:
    """The workload the options name (checked without running it), or None when none was given."""
    from .hf import HfSpec
    from .workload_source import WorkloadSource

    sizes = {name[3:]: value for name, value in hf_options.items() if value is not None}
    if sizes and hf is None and hf_config is None:
        raise BadInputError(f"--hf-{next(iter(sizes)).replace('_', '-')} applies to a Hugging Face model: give "
                            "--hf ARCH or --hf-config PATH too")
    spec = HfSpec(model_type=hf, config_path=hf_config, **sizes) if hf or hf_config else None
    if model is None and example is None and spec is None:
        return None
    return WorkloadSource.given(model, example, spec)


def _named(workload: Any) -> str:
    return workload.short if workload is not None else "?"


def _trial_progress(progress: StatusLine, steps: int, warmup: int) -> Callable[[dict[str, Any]], None]:
    """Turn the worker's events into the status line."""

    def on_event(event: dict[str, Any]) -> None:
        phase, index = event.get("phase"), event.get("index", 0)
        if event.get("event") == "step":
            total = {"warmup": warmup, "measured": steps, "fp32 reference": warmup + steps}.get(str(phase), 0)
            progress(f"{phase} step {index + 1}/{total}", key=phase)
        elif event.get("event") == "phase":
            progress(str(phase), key=phase)
        elif event.get("event") == "notice":
            progress.note(str(event.get("text")))

    return on_event


@cli.command()
@_workload_options
@click.option("--dtype", required=True, type=click.Choice(TRAINING_DTYPE_NAMES), help="Training precision.")
@click.option("--batch-size", required=True, type=click.IntRange(1, MAX_BATCH_SIZE), metavar="N",
              help="Samples per micro-batch.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N, mps; auto = cuda:0 if present.")
@click.option("--steps", default=20, show_default=True, type=click.IntRange(1, MAX_STEPS),
              help="Measured optimizer steps.")
@click.option("--warmup-steps", default=3, show_default=True, type=click.IntRange(0, MAX_STEPS),
              help="Untimed steps first.")
@click.option("--init-scale", default=DEFAULT_INIT_SCALE, show_default=True,
              type=Finite(0, MAX_INIT_SCALE, min_open=True),
              help="GradScaler init_scale (fp16 only).")
@click.option("--growth-interval", default=DEFAULT_GROWTH_INTERVAL, show_default=True, type=int,
              help="GradScaler growth_interval (fp16 only).")
@click.option("--grad-accum", default=1, show_default=True, type=int, metavar="A",
              help="Micro-batches per optimizer step.")
@click.option("--timeout", type=Finite(0, MAX_TRIAL_TIMEOUT_S, min_open=True), metavar="SECONDS",
              help="Kill the trial after this long. "
                   "Default: when it stops making progress for 30 s + 20x its slowest step.")
@click.option("--no-fp32-check", is_flag=True, help="Skip the fp32 reference run (no loss agreement figure).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the TrialResult as JSON.")
@_parallel_options
@click.option("--comm", type=click.Choice(sorted({c for cs in COMMS.values() for c in cs})), default="fp32",
              show_default=True, help="With --parallel: what gradients are reduced in (ddp: fp32, fp16, bf16 on "
                                      "NCCL; fsdp2: fp32, bf16).")
@debug_option
def bench(workload: Any, dtype: str, batch_size: int, device: str, steps: int,
          warmup_steps: int, init_scale: float, growth_interval: int, grad_accum: int, timeout: float | None,
          no_fp32_check: bool, seed: int, as_json: bool, parallel: str | None, nproc_per_node: int | None,
          collective_timeout: float, comm: str) -> None:
    """Measure one configuration of MODEL with real training steps.

    MODEL is a model.py, or a module:attr import string (mypkg.workloads:gpt, imported in the
    worker), defining build_model() and make_batch(batch_size, device), optionally loss_fn(model,
    batch) and build_optimizer(params); or give --example NAME, or --hf ARCH. The trial runs in
    a worker process: an out-of-memory, a hang, a crash or a non-finite loss is reported as the
    trial's status, not a traceback.

    Exit code: 0 when the trial ran cleanly, 1 when it ended in oom, timeout, crash, nonfinite
    or error (the result is still printed), 2 for bad input.
    """
    from .harness.render import render_trial
    from .lifecycle import bench as run_bench

    if parallel is not None:  # before any rank starts: a reduction the backend cannot run
        from .distributed.env import resolve_device
        from .distributed.policy import backend_for, comm_rule

        if why := comm_rule(Parallel(parallel), comm, backend_for(resolve_device(device))):
            raise BadInputError(f"--comm {comm}: {why}; use fp32 or fp16 here")
    _launch_if_needed("bench", parallel, nproc_per_node)
    progress = StatusLine(prefix=f"{_named(workload)} {dtype} batch {batch_size}: ")
    result = run_bench(
        workload, dtype=dtype, batch_size=batch_size, device=device, steps=steps,
        warmup_steps=warmup_steps, init_scale=init_scale, growth_interval=growth_interval,
        grad_accum=grad_accum, timeout=timeout, compare_fp32=not no_fp32_check, seed=seed,
        on_event=_trial_progress(progress, steps, warmup_steps), parallel=parallel,
        comm=comm if parallel else "", collective_timeout_s=collective_timeout,
    )
    progress.done()
    if result is None:
        return  # a rank other than 0: rank 0 prints the trial
    if as_json:
        click.echo(dumps(result.to_dict()))
    else:
        print_out(render_trial(result))
    if result.status is not Status.OK:
        sys.exit(1)  # the measurement happened and is printed; scripts still see that it failed


@cli.command()
@_workload_options
@click.option("--dtype", required=True, type=click.Choice([d.value for d in (Dtype.FP16, Dtype.BF16)]),
              help="The reduced precision to X-ray.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1, MAX_BATCH_SIZE), metavar="N",
              help="Samples per step.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N, mps; auto = cuda:0 if present.")
@click.option("--steps", default=DEFAULT_DIAGNOSE_STEPS, show_default=True, type=click.IntRange(1, MAX_STEPS),
              help="Training steps to watch.")
@click.option("--init-scale", default=DEFAULT_INIT_SCALE, show_default=True, type=Finite(0, MAX_INIT_SCALE,
              min_open=True), help="GradScaler init_scale (fp16 only).")
@click.option("--fp32-modules", default="", metavar="NAMES",
              help="Comma-separated modules to keep in fp32 (names as in named_modules(), or class names): "
                   "check that the advice fixes it.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True,
              help="Print the diagnosis as JSON: `culprits` (most likely first) and every module's statistics.")
@debug_option
def diagnose(workload: Any, dtype: str, batch_size: int, device: str, steps: int,
             init_scale: float, fp32_modules: str, seed: int, as_json: bool) -> None:
    """Find the module that breaks fp16/bf16 training of MODEL, and what to keep in fp32.

    Trains --steps real steps at --dtype with hooks on every module, forward and backward, beside
    an fp32 run of the same weights and batches; records per module and step the largest values
    and gradients (at the loss scale for fp16), the share beyond fp16's range, inf/NaN, and the
    drift from fp32. Then ranks the culprits: where the forward pass first turns inf/NaN, where the
    backward pass does (when it outlasts GradScaler's backoff), and the modules that drift from
    fp32 far more than their inputs do.

    Exit code: 0 with the diagnosis printed (culprits or none), 1 when the model raised, ran out
    of memory or hung, 2 for bad input.
    """
    from .harness.render import render_diagnosis
    from .harness.worker import DiagnoseError
    from .lifecycle import diagnose as run_diagnose

    islands = tuple(name.strip() for name in fp32_modules.split(",") if name.strip())
    progress = StatusLine(prefix=f"{_named(workload)} {dtype} batch {batch_size}: ")

    def on_event(event: dict[str, Any]) -> None:
        if event.get("event") == "step":
            progress(f"diagnose step {event.get('index', 0) + 1}/{steps}", key="diagnose")

    try:
        result = run_diagnose(workload, dtype=dtype, batch_size=batch_size, device=device, steps=steps,
                              init_scale=init_scale, fp32_modules=islands, seed=seed, on_event=on_event)
    except DiagnoseError as exc:
        progress.done()
        click.echo(f"amp-advisor: {exc}", err=True)
        sys.exit(1)
    progress.done()
    if as_json:
        click.echo(dumps(result.to_dict()))
    else:
        print_out(render_diagnosis(result))


@cli.command()
@_workload_options
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N, mps; auto = cuda:0 if present.")
@click.option("--out", type=click.Path(file_okay=False, path_type=str),
              help="Run directory [default: reports/<timestamp>-<model>/].")
@click.option("--resume", is_flag=True, help="Continue the run in --out; finished trials are not repeated.")
@click.option("--strategy", type=click.Choice(["bayes", "grid"]), default="bayes", show_default=True,
              help="bayes: scikit-optimize ask/tell; grid: every candidate (validation, fallback).")
@click.option("--batch-sizes", metavar="LIST",
              help=f"Batch sizes to consider, e.g. 16,32,64 [default: {describe_default_batch_sizes()}].")
@click.option("--global-batch", type=int, metavar="B", help="Keep micro-batch x gradient accumulation = B.")
@click.option("--time-budget", type=Finite(0, min_open=True), default=TuneSettings.time_budget_s,
              show_default=True, metavar="SECONDS",
              help="Stop searching after this long.")
@click.option("--max-trials", type=int, metavar="N",
              help=f"Search trials at most, before the confirmation rounds [default: bayes {SEARCH_SHARE:.0%} of the "
                   f"points that change speed, dtype x batch size (at least {MIN_SEARCH_TRIALS}), grid all of them]; "
                   f"the leader's climb to larger batches is finished past it ({FINISH_TRIALS} trials at most).")
@click.option("--timeout", type=Finite(0, min_open=True), metavar="SECONDS",
              help="Per-trial limit [default: progress watchdog].")
@click.option("--tolerance", type=Finite(0, 10.0, min_open=True), default=TuneSettings.tolerance, show_default=True,
              help=f"Largest relative loss difference from fp32 over the first {COMPARE_STEPS} steps.")
@click.option("--steps", type=int, default=TuneSettings.steps, show_default=True,
              help="Measured steps per trial at most (fewer when steps are long).")
@click.option("--seed", type=int, default=0, show_default=True, help="Makes the sequence of trials reproducible.")
@click.option("--train-steps", type=int, default=DEFAULT_TRAIN_STEPS, show_default=True, metavar="N",
              help="Optimizer steps of the training you plan: a lever with a one-time cost (torch.compile's "
                   "compile) is recommended only where it pays for itself within them.")
@click.option("--skip-lever", "skip_levers", multiple=True, type=click.Choice(LEVER_NAMES), metavar="NAME",
              help=f"Do not try this lever (repeatable): one of {', '.join(LEVER_NAMES)}.")
@_parallel_options
@debug_option
def tune(workload: Any, device: str, out: str | None, resume: bool, strategy: str,
         batch_sizes: str | None, global_batch: int | None, time_budget: float, max_trials: int | None,
         timeout: float | None, tolerance: float, steps: int, seed: int, train_steps: int,
         skip_levers: tuple[str, ...], parallel: str | None, nproc_per_node: int | None,
         collective_timeout: float) -> None:
    """Find the dtype, batch size and GradScaler settings that train MODEL fastest here without
    hurting its numerics; write recommendation.json, trials.jsonl and trials.csv.

    MODEL is a model.py or a module:attr import string (see `bench --help`); or give --example
    NAME, or --hf ARCH (a Hugging Face architecture, small unless sized), or --hf-config PATH.

    Every trial is appended to trials.jsonl when it ends. Ctrl-C or SIGTERM leaves the run
    directory consistent; --resume --out DIR continues it.

    With --parallel every rank trains each trial (under torchrun, or the ranks --nproc-per-node
    starts): rank 0 searches and alone writes the run directory; batch sizes are per rank, and
    what gradients are reduced in (ddp: fp32/fp16/bf16 all-reduce; fsdp2: fp32/bf16 reduce-scatter)
    is searched beside the dtype. A rank that runs out of memory, crashes or hangs fails that trial
    (the rank is named) and the run goes on with fresh workers on every rank.
    """
    from .lifecycle import tune as run_tune
    from .tuning.render import render_summary
    from .tuning.space import parse_batch_sizes

    _launch_if_needed("tune", parallel, nproc_per_node)
    progress = TuneDisplay()
    settings: dict[str, Any] = dict(strategy=strategy, seed=seed, max_trials=max_trials, time_budget_s=time_budget,
                    trial_timeout_s=timeout, tolerance=tolerance, steps=steps, global_batch=global_batch,
                    batch_sizes=parse_batch_sizes(batch_sizes) if batch_sizes is not None else None,
                    parallel=parallel, collective_timeout_s=collective_timeout, train_steps=train_steps,
                    skip_levers=tuple(skip_levers))
    if resume:  # only what was typed: the saved run's settings hold unless an option says otherwise
        ctx = click.get_current_context()
        typed = {name for name in ctx.params
                 if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE}
        option_of = {"time_budget_s": "time_budget", "trial_timeout_s": "timeout",
                     "collective_timeout_s": "collective_timeout"}
        settings = {k: v for k, v in settings.items() if option_of.get(k, k) in typed}
    interrupted: KeyboardInterrupt | None = None
    try:
        result = run_tune(workload, device=device, out=out, resume=resume, on_event=progress,
                          **settings)
    except KeyboardInterrupt as exc:
        interrupted = exc
    finally:
        progress.stop()  # however the run ends: the live table leaves the screen as it was
    if interrupted is not None:
        click.echo(interrupted_message(interrupted), err=True)
        sys.exit(getattr(interrupted, "exit_code", 130))
    if result is None:
        return  # a rank other than 0: rank 0 reports the run
    print_out(render_summary(result))
    if result.report is None:
        retry = f"amp-advisor report {shlex.quote(str(result.out_dir))}"
        click.echo(f"report not written ({result.report_error}); retry with `{retry}`", err=True)
    if result.recommendation is None:
        sys.exit(1)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=str))
@debug_option
def report(run_dir: str) -> None:
    """(Re)write report.md and report.html in RUN_DIR (a directory `amp-advisor tune` wrote) from its
    trials.jsonl and recommendation.json.

    The HTML is one self-contained file (plots embedded, no external requests). A partial or
    interrupted run renders with what it has and says what is missing.
    """
    from .report import write_report

    files = write_report(run_dir)
    plots_dir = files.markdown.parent / "plots"
    click.echo(f"wrote {files.html} and {files.markdown} ({len(files.plots)} plots in {plots_dir})")
    for missing in files.missing:
        click.echo(f"  partial: {missing}", err=True)


@cli.command()
@click.argument("run_dirs", metavar="RUN_DIR RUN_DIR...", nargs=-1, type=click.Path(path_type=str))
@click.option("--out", type=click.Path(path_type=str), metavar="FILE",
              help="The HTML page to write [default: reports/<timestamp>-compare.html].")
@click.option("--force", is_flag=True, help="Compare runs of different workloads anyway (their figures do not "
                                           "compare: say why you want it).")
@debug_option
def compare(run_dirs: tuple[str, ...], out: str | None, force: bool) -> None:
    """Put tune runs side by side: the same workload on two machines, or before and after a change.

    Prints the device, the recommendation, its speedup vs fp32, samples/s per configuration and
    memory of every run, and writes one self-contained HTML page with a comparison plot (the
    conventions of report.html). Runs of different workloads are refused unless --force.
    """
    from .report.compare import compare as run_compare
    from .report.compare import comparison_path, render_comparison, write_comparison

    page = comparison_path(out)  # a bad --out is refused before the runs are read or the table printed
    comparison = run_compare(list(run_dirs), force=force)
    print_out(render_comparison(comparison))
    click.echo(f"page: {write_comparison(comparison, page)}")


@cli.command()
@click.argument("source", metavar="RUN_DIR_OR_JSON", type=click.Path(path_type=str))
@click.option("--format", "fmt", type=click.Choice(list(SNIPPET_FORMATS)), default="torch", show_default=True,
              help="json/toml: the recommendation itself; torch: a plain torch.amp loop; lightning: Trainer; "
                   "accelerate: Accelerator; hf-trainer: TrainingArguments; deepspeed: the config's fp16/bf16 block.")
@debug_option
def show(source: str, fmt: str) -> None:
    """Print a recommendation as a paste-ready snippet for your framework.

    RUN_DIR_OR_JSON is a run directory from `amp-advisor tune`, or a recommendation.json (or
    the .toml this command writes). Reading it never executes code.
    """
    from .recommendation import Recommendation
    from .snippets import render

    click.echo(render(Recommendation.load(source, check_hardware=False), fmt), nl=False)


def interrupted_message(exc: KeyboardInterrupt) -> str:
    """What an interrupted tune left, as it is: a run to resume (its directory, quoted for the
    shell), or nothing when it stopped before the run directory was written."""
    run_dir = getattr(exc, "run_dir", None)
    if run_dir is None:
        return "interrupted before the first trial: no run directory was written, so there is nothing to resume"
    unmarked = getattr(exc, "unmarked", None)
    if unmarked:
        return (f"interrupted, but run.json could not be marked so ({unmarked}): free the disk, then continue with "
                f"`amp-advisor tune --resume --out {shlex.quote(str(run_dir))}`")
    return (f"interrupted: the run directory is consistent; continue with "
            f"`amp-advisor tune --resume --out {shlex.quote(str(run_dir))}`")


def main(argv: list[str] | None = None) -> None:
    # SIGTERM ends any command as Ctrl-C does (cleanup, then exit 143), from the first moment
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, raise_interrupted)
    if os.environ.get("TORCHELASTIC_RUN_ID") or os.environ.get("LOCAL_RANK"):
        # a rank: when its launcher dies (even by SIGKILL) it is told, ends as on SIGTERM (its run
        # marked interrupted, its worker's tree killed), and does not live on as an orphan
        signal_on_parent_death(signal.SIGTERM)
    try:
        cli.main(args=argv, prog_name="amp-advisor", standalone_mode=False)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort as exc:  # click turns a KeyboardInterrupt (ours: Interrupted) into Abort
        click.echo("aborted", err=True)
        cause = exc.__cause__
        sys.exit(cause.exit_code if isinstance(cause, Interrupted) else 130)
    except Interrupted as exc:
        click.echo("interrupted", err=True)
        sys.exit(exc.exit_code)
    except AdvisorError:
        raise  # only with --debug: the group turns these into usage errors otherwise
    except Exception as exc:
        if "--debug" in (argv if argv is not None else sys.argv[1:]):
            raise
        click.echo(f"amp-advisor: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
                   err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
