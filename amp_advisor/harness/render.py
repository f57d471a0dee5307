"""A TrialResult as text for the terminal. Returns a string; never prints."""

from __future__ import annotations

from .trial import TrialResult


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.1f} ms"


def _num(value: float | None, fmt: str = ".3g", unit: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{unit}"


def render_trial(result: TrialResult) -> str:
    spec = result.spec
    head = (f"{result.status.upper()}  {spec.workload.rsplit('/', 1)[-1]}  {spec.dtype} on {spec.device}, "
            f"batch {spec.batch_size}" + (f" x {spec.grad_accum} accumulated" if spec.grad_accum > 1 else ""))
    lines = [head]
    if result.error:
        lines.append(f"  {result.error}")
    t = result.step_time_s
    if t is not None:
        lines.append(f"  step time     median {_ms(t.median)}, IQR {_ms(t.iqr)} "
                     f"(min {_ms(t.min)}, max {_ms(t.max)}, {len(t.samples)} steps after {spec.warmup_steps} warm-up)")
        lines.append(f"  throughput    {_num(result.samples_per_s, '.1f')} samples/s")
        gflop = _num(result.flops_per_step and result.flops_per_step / 1e9, ".3g")
        work = f"  compute       {_num(result.tflops, '.3g')} TFLOP/s ({gflop} GFLOP/step)"
        if result.mfu is not None:
            work += f", MFU {result.mfu:.1%} of {result.peak_tflops:g} peak"
        lines.append(work)
    if result.peak_memory_bytes is not None:
        lines.append(f"  peak memory   {result.peak_memory_bytes / 2**20:.1f} MiB ({result.memory_method})")
    if result.losses:
        lines.append(f"  loss          {result.losses[0]:.4g} -> {result.losses[-1]:.4g}")
    if result.loss_rel_diff_vs_fp32 is not None:
        compared = f"the first {len(result.fp32_losses)} steps (warm-up included)" if result.fp32_losses else "the run"
        lines.append(f"  vs fp32       relative loss difference {result.loss_rel_diff_vs_fp32:.2e} over {compared}")
    if result.skipped_steps is not None:
        lines.append(f"  loss scaling  {result.skipped_steps} skipped steps, final scale {result.final_loss_scale:g}")
    g = result.grad_stats
    if g is not None:
        lines.append(f"  gradients     at scale {g.scale:g}: {g.underflow_fraction:.2%} would underflow in fp16, "
                     f"{g.overflow_fraction:.2%} overflow; max |g| {g.max_abs:.3g}")
    for warning in result.warnings:
        lines.append(f"  warning: {warning}")
    if result.loop_overhead_fraction is not None:
        lines.append(f"  (timed-loop overhead outside the steps: {result.loop_overhead_fraction:.3%}; "
                     f"trial wall time {_num(result.wall_s, '.1f', ' s')})")
    return "\n".join(lines)

