"""The end of a tune run for the terminal: what was recommended, measured where, and why, as a
rich table. Returns a renderable; never prints."""

from __future__ import annotations

from rich.console import RenderableType
from rich.text import Text

from ..console import facts
from ..dtypes import Dtype
from .conclude import TuneResult


def render_summary(result: TuneResult) -> RenderableType:
    table = facts()
    table.add_row("run", f"{result.trials_run} trials in {result.wall_s:.0f} s ({result.stopped_because})")
    table.add_row("run directory", str(result.out_dir))
    if result.report is not None:
        table.add_row("report", f"{result.report.html}  (and report.md)")
    rec = result.recommendation
    if rec is None:
        table.add_row("recommendation", "none: no configuration ran cleanly (see the report or trials.csv for why)")
    else:
        m = rec.measured
        accum = f" x {rec.grad_accumulation_steps} accumulation" if rec.grad_accumulation_steps > 1 else ""
        table.add_row("recommendation", Text.assemble((f"{rec.dtype}, batch {rec.batch_size}{accum}", "bold"),
                                                      f", {m.samples_per_s:.1f} samples/s"))
        versus = [f"{m.speedup_vs_fp32:.2f}x fp32 at the same batch"] if m.speedup_vs_fp32 else []
        if m.speedup_vs_best_fp32 and rec.dtype is not Dtype.FP32:
            versus.append(f"{m.speedup_vs_best_fp32:.2f}x the best fp32")
        if versus:
            table.add_row("vs fp32", ", ".join(versus))
        if rec.trials():
            confirmed = " (interleaved confirmation rounds)" if (rec.evidence or {}).get("confirmed") else ""
            table.add_row("measured in", f"trials {', '.join(map(str, rec.trials()))}{confirmed}")
        if rec.scaler.enabled:
            table.add_row("GradScaler", f"init_scale={rec.scaler.init_scale:g}, "
                                        f"growth_interval={rec.scaler.growth_interval}")
        table.add_row("why", rec.why)
    for note in result.notes:
        table.add_row("note", note)
    return table
