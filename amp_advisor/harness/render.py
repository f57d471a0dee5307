"""A TrialResult and a Diagnosis for the terminal: rich renderables (tables of their figures).
Returns them; never prints."""

from __future__ import annotations

import math
import shlex

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.text import Text

from ..console import count, facts, grid
from ..diagnosis import Diagnosis
from ..distributed.policy import Parallel, describe
from ..dtypes import FP16_MAX
from ..workload_source import readable
from .trial import RankReport, Status, TrialResult


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.1f} ms"


def _num(value: float | None, fmt: str = ".3g", unit: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{unit}"


def render_trial(result: TrialResult) -> RenderableType:
    spec = result.spec
    head = (f"{result.status.upper()}  {_short(spec.workload)}  {spec.dtype} on {spec.device}, "
            f"batch {spec.batch_size}" + (f" x {spec.grad_accum} accumulated" if spec.grad_accum > 1 else ""))
    if spec.parallel:
        policy = describe(Parallel(spec.parallel), spec.comm, spec.dtype)
        head += f" per rank x {len(result.ranks) or '?'} ranks; {policy}"
    table = facts()
    if result.error:
        table.add_row("error", result.error)
    if result.architecture is not None:
        size = f", {count(result.parameters)} parameters" if result.parameters is not None else ""
        table.add_row("model", f"{result.architecture}{size}")
    t = result.step_time_s
    if t is not None:
        table.add_row("step time", f"median {_ms(t.median)}, IQR {_ms(t.iqr)} (min {_ms(t.min)}, max {_ms(t.max)}, "
                                   f"{len(t.samples)} steps after {spec.warmup_steps} warm-up)")
        table.add_row("throughput", f"{_num(result.samples_per_s, '.1f')} samples/s")
        gflop = _num(result.flops_per_step and result.flops_per_step / 1e9, ".3g")
        work = f"{_num(result.tflops, '.3g')} TFLOP/s ({gflop} GFLOP/step)"
        if result.mfu is not None:
            work += f", MFU {result.mfu:.1%} of {result.peak_tflops:g} peak"
        table.add_row("compute", work)
    if result.peak_memory_bytes is not None:
        table.add_row("peak memory", f"{result.peak_memory_bytes / 2**20:.1f} MiB ({result.memory_method})")
    if result.losses:
        table.add_row("loss", f"{result.losses[0]:.4g} -> {result.losses[-1]:.4g}")
    if result.loss_rel_diff_vs_fp32 is not None:
        compared = f"the first {len(result.fp32_losses)} steps (warm-up included)" if result.fp32_losses else "the run"
        table.add_row("vs fp32", f"relative loss difference {result.loss_rel_diff_vs_fp32:.2e} over {compared}")
    if result.skipped_steps is not None:
        table.add_row("loss scaling", f"{result.skipped_steps} skipped steps, final scale {result.final_loss_scale:g}")
    g = result.grad_stats
    if g is not None:
        table.add_row("gradients", f"at scale {g.scale:g}: {g.underflow_fraction:.2%} would underflow in fp16, "
                                   f"{g.overflow_fraction:.2%} overflow; max |g| {g.max_abs:.3g}")
    if result.ranks:
        table.add_row("ranks", "; ".join(_rank_line(r) for r in result.ranks))
    for warning in result.warnings:
        table.add_row("warning", Text(warning, style="yellow"))
    if result.loop_overhead_fraction is not None:
        table.add_row("", f"(timed-loop overhead outside the steps: {result.loop_overhead_fraction:.3%}; "
                          f"trial wall time {_num(result.wall_s, '.1f', ' s')})")
    style = "bold green" if result.status is Status.OK else "bold red"
    return Group(Text(head, style=style), Padding(table, (0, 0, 0, 2), expand=False))


def _rank_line(r: RankReport) -> str:
    """One rank's side of a distributed trial, e.g. "1: ok, step 12.3 ms, 310 MiB"."""
    parts = [f"{r.rank}: {r.status}" + (" (waiting in a collective)" if r.comm_failure else "")]
    if r.step_median_s is not None:
        parts.append(f"step {_ms(r.step_median_s)}")
    if r.peak_memory_bytes is not None:
        parts.append(f"{r.peak_memory_bytes / 2**20:.0f} MiB")
    return ", ".join(parts)


def render_diagnosis(d: Diagnosis, *, top: int = 8) -> RenderableType:
    """The culprits and their advice first, then the modules nearest fp16's limits."""
    source = readable(d.workload)
    head = (f"{_short(d.workload)}: {d.dtype} on {d.device}, batch {d.batch_size}, {len(d.losses)} steps beside fp32"
            + (f" (fp32 islands: {', '.join(d.fp32_modules)})" if d.fp32_modules else ""))
    summary = facts()
    bad = [i + 1 for i, x in enumerate(d.losses) if not math.isfinite(x)]
    if bad:
        summary.add_row("loss", f"non-finite at {len(bad)} of {len(d.losses)} steps (first: step {bad[0]})")
    elif d.losses and d.ref_losses:
        diff = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(d.losses, d.ref_losses, strict=False))
        summary.add_row("loss", f"finite; within {diff:.3%} of the fp32 run of the same weights and batch")
    if d.scales:
        summary.add_row("loss scale", f"{d.scales[0]:g} at step 1, {d.scales[-1]:g} at step {len(d.scales)}")
    culprits = d.culprits()
    lines = []
    if (step := d.fp32_nonfinite_step) is not None:
        summary.add_row("fp32", f"non-finite too (from step {step}): the model fails in fp32 as well, so this is "
                                f"not a precision problem and no fp32 island fixes it; look at the model, its data "
                                f"and the learning rate")
        culprits = []
    elif not culprits:
        summary.add_row("culprits", f"none: every module kept to fp32's numerics within {d.dtype}'s rounding and range")
    else:
        lines.append("culprits, most likely first:")
        for k, c in enumerate(culprits, 1):
            lines.append(f"  {k}. {c.module} ({c.module_type}): {c.kind}")
            lines.append(f"     {c.advice}")
        names = list(d.advised_islands())
        if names:  # every word of the command quoted for the shell: a module or path is data
            again = source.arguments if source else [d.workload]
            command = ["amp-advisor", "diagnose", *again, "--dtype", str(d.dtype),
                       "--batch-size", str(d.batch_size), "--fp32-modules", ",".join(names)]
            lines.append(f"check the fix: {shlex.join(command)}")
            lines.append(f"in training: MixedPrecision(\"{d.dtype}\", ..., fp32_modules={names!r}).prepare(model)")
        else:
            lines.append("no submodule to keep in fp32: train in bf16 (fp32's range) or fp32")
    ranked = sorted(range(len(d.modules)), key=lambda m: -max(_finite(d.series(m, "ref_out_max")), default=0.0))
    table = grid("module", "type", "largest |out|", "drift vs fp32",
                 title=f"largest fp32 outputs (fp16's max is {FP16_MAX:g}):")
    for column in table.columns[2:]:
        column.justify = "right"
    for column in table.columns[:2]:
        column.overflow, column.max_width = "ellipsis", 48
    for m in ranked[:top]:
        peak = max(_finite(d.series(m, "ref_out_max")), default=float("nan"))
        err = max(_finite(d.series(m, "rel_err")), default=float("nan"))
        table.add_row(d.modules[m], d.module_types[m], f"{peak:.3g}", f"{err:.2%}" if math.isfinite(err) else "-")
    return Group(Text(head), Padding(summary, (0, 0, 0, 2), expand=False), *(Text(line) for line in lines),
                 Padding(table, (0, 0, 0, 2), expand=False))


def _short(ref: str) -> str:
    source = readable(ref)
    return source.short if source else ref


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]
