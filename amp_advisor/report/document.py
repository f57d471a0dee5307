"""What the report says, as data: sections of blocks. markdown.py and html.py only lay it out,
so the two files always say the same thing.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field

from .. import levers
from ..console import count
from ..distributed.policy import FULL_COMM, Parallel, describe
from ..dtypes import Dtype
from ..harness.trial import Status
from ..snippets import literal, torch_loop
from .plots import Plot
from .run import Run


@dataclass(frozen=True)
class Card:
    label: str
    value: str
    detail: str = ""


@dataclass(frozen=True)
class Cards:
    cards: tuple[Card, ...]


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Facts:
    rows: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Cell:
    text: str
    sort: float | str | None = None  # what the HTML table sorts by; None: by the text
    kind: str = ""  # a CSS hook: "ok", "failed", "pruned", "num"


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    sortable: bool = False
    highlight: frozenset[int] = frozenset()  # row indexes to emphasise (the recommended trial)
    # A line of text per row too long for a column (why a trial failed): Markdown gives it a
    # last column, the HTML a full-width line under its row, so the table never needs scrolling.
    row_notes: tuple[str, ...] = ()
    note_column: str = ""


@dataclass(frozen=True)
class Code:
    text: str
    language: str = "python"


@dataclass(frozen=True)
class Figure:
    plot: Plot


Block = Cards | Para | Bullets | Facts | Table | Code | Figure


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class Document:
    title: str
    subtitle: str
    partial: tuple[str, ...]  # what is missing from the run directory
    sections: tuple[Section, ...] = field(default_factory=tuple)


# ------------------------------------------------------------------------------ formatting
def gib(value: float | None) -> str:
    if value is None:
        return "–"
    if abs(value) < 2**30:
        return f"{value / 2**20:.0f} MiB"
    return f"{value / 2**30:.2f} GiB"


def seconds(value: float | None) -> str:
    if value is None:
        return "–"
    if value >= 90:
        return f"{value / 60:.1f} min"
    return f"{value:.1f} s"


def number(value: float | None, fmt: str = ".1f") -> str:
    return "–" if value is None else format(value, fmt)


def scale_text(value: float | None) -> str:
    if not value:
        return "–"
    exponent = math.log2(value)
    return f"2^{exponent:g}" if exponent == int(exponent) else f"{value:g}"


# -------------------------------------------------------------------------------- sections
def build(run: Run, plots: list[Plot]) -> Document:
    by_name = {p.name: p for p in plots}
    rec = run.recommendation
    subtitle = (f"{run.workload} on {run.device_name} "
                f"({run.settings.get('device', '?')}), run {run.state}")
    sections = (
        _answer(run),
        _workload(run),
        _hardware(run),
        Section("measurements", "Speed and memory", tuple(
            Figure(by_name[n]) for n in ("throughput", "memory", "tflops"))),
        Section("numerics", "Numerics", (Figure(by_name["gradients"]), Figure(by_name["loss"]))),
        *_xray(run, by_name["xray"]),
        *_ranks(run, by_name["ranks"]),
        *_levers(run),
        _search(run, by_name["search"]),
        _trials(run),
        _caveats(run),
    )
    title = "amp-advisor: " + (f"use {rec.dtype} at batch size {rec.batch_size}" if rec else "no recommendation")
    return Document(title, subtitle, tuple(run.missing), sections)


def _rests_on(rec, twin: dict | None, best_fp32: dict | None) -> str:
    """Which trials the figures come from (trial numbers as in the trials table below)."""
    def trials(entry: dict) -> str:
        return ", ".join(str(n) for n in entry["trials"])

    how = "interleaved confirmation rounds" if rec.evidence.get("confirmed") else "single exploration trials"
    text = (f"These figures rest on {how}: {rec.dtype} batch {rec.batch_size} "
            f"in trials {trials(rec.evidence['recommended'])}")
    if best_fp32 and best_fp32["config"] != rec.evidence["recommended"]["config"]:
        text += (f"; the best fp32 configuration, {best_fp32['config']}, "
                 f"at {number(best_fp32['samples_per_s'])} samples/s in trials {trials(best_fp32)}")
        if rec.measured.speedup_vs_best_fp32:
            text += f" ({rec.measured.speedup_vs_best_fp32:.2f}x)"
    if twin and twin["config"] not in (rec.evidence["recommended"]["config"], (best_fp32 or {}).get("config")):
        text += f"; fp32 at the same batch in trials {trials(twin)}"
    return text + "."


def _answer(run: Run) -> Section:
    rec = run.recommendation
    if rec is None:
        why = run.no_recommendation_why or "no recommendation.json"
        return Section("answer", "Recommendation", (Para(f"No recommendation: {why}. The trials that ran are below."),))
    twin, best_fp32 = run.fp32_figure("fp32_same_batch"), run.fp32_figure("fp32_best")
    saved = run.memory_saved_bytes()
    speedup = rec.measured.speedup_vs_fp32
    accum = f"x {rec.grad_accumulation_steps} accumulation" if rec.grad_accumulation_steps > 1 else "no accumulation"
    cards = [
        Card("dtype", str(rec.dtype), "TF32 matmuls on" if rec.tf32 else ""),
        Card("batch size", str(rec.batch_size), accum),
        Card("throughput", f"{rec.measured.samples_per_s:.1f}", "samples/s"),
        Card("vs fp32", f"{speedup:.2f}x" if speedup else "–",
             f"fp32 at batch {rec.batch_size}: {number(twin['samples_per_s'])} samples/s" if twin
             else "fp32 not measured at this batch"),
        Card("peak memory", gib(rec.measured.peak_memory_bytes),
             (f"saves {gib(saved)} vs fp32" if saved and saved > 0 else
              f"{gib(-saved)} more than fp32" if saved and saved < 0 else "same as fp32" if saved == 0 else "")),
    ]
    if rec.scaler.enabled:
        cards.append(Card("GradScaler", f"init {scale_text(rec.scaler.init_scale)}",
                          f"growth interval {rec.scaler.growth_interval}"))
    else:
        cards.append(Card("GradScaler", "off", "only fp16 needs loss scaling"))
    blocks: list = [Cards(tuple(cards)), Para("Why: " + rec.why + ".")]
    if rec.evidence:
        blocks.append(Para(_rests_on(rec, twin, best_fp32)))
    if rec.machine_busy:
        blocks.append(Para("Measured on a busy machine: " + rec.machine_busy))
    if rec.dtype is Dtype.FP32 and speedup is not None and abs(speedup - 1) < 1e-9:
        blocks.append(Para("fp32 is compared with itself here: no reduced precision beat it on this hardware."))
    blocks += [
        Para("Paste into a plain torch.amp training loop (model, optimizer, loss_fn and loader are yours):"),
        Code(torch_loop(rec)),
        Para("Or let amp-advisor's helper own autocast, the scaler, accumulation and its statistics "
             "(the recommendation is JSON, never executed):"),
        Code("from amp_advisor import Recommendation\n\n"
             f'amp = Recommendation.load({literal(str(run.dir / "recommendation.json"))}).mixed_precision()\n'
             "for batch in loader:\n"
             "    with amp.autocast():\n"
             "        loss = loss_fn(model, batch)\n"
             "    amp.backward(loss)\n"
             "    amp.step(optimizer)\n"
             "amp.save_stats(\"amp_stats.json\")  # steps, skipped steps, scale history\n"),
        Para("Configs for Lightning, Accelerate, Hugging Face and DeepSpeed: "
             f"`amp-advisor show {shlex.quote(str(run.dir))} --format lightning` (or accelerate, hf-trainer, "
             "deepspeed, toml)."),
    ]
    return Section("answer", "Recommendation", tuple(blocks))


def _workload(run: Run) -> Section:
    rows: list[tuple[str, str]] = [("given as", run.workload)]
    built = run.built_model
    if built is None:
        return Section("workload", "Workload", (Facts(tuple(rows)), Para("No trial built the model.")))
    unrecorded = "not recorded (runs before amp-advisor recorded the model)"
    rows.append(("architecture", built.architecture or unrecorded))
    rows.append(("parameters", count(built.parameters) if built.parameters is not None else unrecorded))
    per_sample = built.flops_per_sample
    rows.append(("FLOPs per sample", f"{per_sample / 1e9:.3g} GFLOP (forward + backward, counted by "
                                     "torch.utils.flop_counter)" if per_sample else "not counted"))
    return Section("workload", "Workload", (Facts(tuple(rows)),))


def _hardware(run: Run) -> Section:
    rows: list[tuple[str, str]] = [("device", f"{run.device_name} ({run.settings.get('device', '?')})")]
    fingerprint = dict(run.recommendation.hardware) if run.recommendation else {}
    dev = run.device
    if dev is not None:
        ident = dev.identity
        for label, attr in (("compute capability", "compute_capability"), ("CPU capability", "torch_cpu_capability"),
                            ("driver", "driver_version"), ("CUDA runtime", "runtime_version"),
                            ("cores", "physical_cores")):
            value = getattr(ident, attr, None)
            if value is not None:
                rows.append((label, str(value)))
        isa = getattr(ident, "isa", None)
        if isa:
            rows.append(("ISA flags", ", ".join(f"{k}{'' if v else ' (no)'}" for k, v in isa.items() if v is not None)))
    memory = run.device_memory_bytes
    if memory:
        rows.append(("device memory", gib(memory)))
    if run.memory_limit_bytes:
        rows.append(("memory limit used", f"{gib(run.memory_limit_bytes)} (available memory less a "
                                          f"{run.context.get('memory_margin', 0.1):.0%} margin)"))
    if fingerprint.get("torch"):
        rows.append(("torch", fingerprint["torch"]))
    blocks: list = [Facts(tuple(rows))]
    if dev is not None:
        verdict_rows = []
        for dtype, v in dev.dtypes.items():
            peak = dev.peak_tflops(dtype)
            verdict_rows.append((Cell(str(dtype)),
                                 Cell("yes" if v.supported else "no", kind="ok" if v.supported else "failed"),
                                 Cell("yes" if v.fast else "no", kind="ok" if v.fast else "pruned"),
                                 Cell(f"{peak:g}" if peak else "–", peak, "num"), Cell(v.why)))
        blocks += [Para("What the probe found, per dtype (supported = it runs at all; fast = a native hardware path):"),
                   Table(("dtype", "supported", "fast", "peak TFLOP/s", "why"), tuple(verdict_rows))]
        if dev.peak is not None:
            blocks.append(Para(f"Peak figures: {dev.peak.name}, {dev.peak.source}."))
    return Section("hardware", "Hardware", tuple(blocks))


def _xray(run: Run, plot: Plot) -> tuple[Section, ...]:
    """The numerics X-ray of each dtype that failed on numerics: the chart, the culprits, the advice."""
    if not run.diagnoses:
        return ()
    blocks: list[Block] = []
    for d in run.diagnoses:
        culprits = d.culprits()
        islands = d.advised_islands()
        blocks.append(Para(f"{d.dtype} failed on numerics, so the tuner X-rayed it: {d.steps} training steps at "
                           f"batch {d.batch_size} with hooks on all {len(d.modules)} modules, beside an fp32 run of "
                           "the same weights and batches. "
                           + (f"It advises keeping {', '.join(islands)} in fp32; the trials show what that does."
                              if islands else "It found no single module to blame: every module kept to fp32's "
                              "numerics within the dtype's rounding and range.")))
        if culprits:
            rows = tuple((Cell(str(k)), Cell(c.module), Cell(c.module_type), Cell(c.kind), Cell(c.passes),
                          Cell(str(c.step), c.step, "num")) for k, c in enumerate(culprits, 1))
            blocks.append(Table(("#", "module", "type", "what", "pass", "step"), rows,
                                row_notes=tuple(c.advice for c in culprits), note_column="advice"))
    if plot.png is not None:
        blocks.append(Figure(plot))
    return (Section("xray", "Numerics X-ray", tuple(blocks)),)


def _ranks(run: Run, plot: Plot) -> tuple[Section, ...]:
    """A distributed run: how the reduction's precision changed speed and numerics, each rank's
    step times (stragglers), and the trials a rank failed."""
    if not run.ranked:
        return ()
    first = run.ranked[0].result
    parallel = Parallel(first.spec.parallel)
    blocks: list[Block] = [Para(
        f"Every trial ran on {len(first.ranks)} ranks under {parallel}: each rank trained the same configuration on "
        "its own batches; a step is the slowest rank's, samples/s count every rank's micro-batches, memory is the "
        "highest rank's peak, and the numerics are rank 0's against an fp32 run (gradients reduced in fp32) from "
        "the same weights and batches.")]
    effects = run.comm_effects()
    full = {e.dtype: e.best_samples_per_s for e in effects if e.comm == FULL_COMM}
    rows = []
    for e in effects:
        base = full.get(e.dtype)
        versus = f"{e.best_samples_per_s / base:.2f}x" if e.best_samples_per_s and base and e.comm != FULL_COMM else "–"
        rows.append((Cell(str(e.dtype)), Cell(describe(parallel, e.comm, e.dtype)),
                     Cell(number(e.best_samples_per_s), e.best_samples_per_s, "num"),
                     Cell(str(e.best_batch) if e.best_batch else "–", e.best_batch, "num"),
                     Cell(versus, None, "num"),
                     Cell(f"{e.worst_loss_diff:.2%}" if e.worst_loss_diff is not None else
                          ("reference" if e.dtype is Dtype.FP32 else "–"), e.worst_loss_diff, "num"),
                     Cell(f"{e.usable} of {e.trials}", e.usable, "num")))
    blocks += [Para("What the precision of the communication did: the best usable speed of each dtype and reduction, "
                    "against the same dtype reducing in fp32, and the largest loss difference from fp32 among its "
                    "trials:"),
               Table(("dtype", "policy", "best samples/s", "at batch", "vs fp32 reduction", "worst loss vs fp32",
                      "usable trials"), tuple(rows))]
    if plot.png is not None:
        blocks.append(Figure(plot))
    faults = run.rank_faults()
    if faults:
        blocks.append(Para("Trials a rank failed (recorded once, with the rank; every rank's worker was replaced "
                           "and the process group formed again before the next trial):"))
        blocks.append(Table(("#", "configuration", "rank", "status"),
                            tuple((Cell(str(r.number), r.number, "num"), Cell(r.candidate.label),
                                   Cell(str(r.result.failed_rank), r.result.failed_rank, "num"),
                                   Cell(r.result.status.value, kind="failed")) for r in faults),
                            row_notes=tuple(r.result.error or "" for r in faults), note_column="why"))
    return (Section("ranks", "Across ranks", tuple(blocks)),)


def _search(run: Run, plot: Plot) -> Section:
    cost = run.cost()
    settings = run.settings
    roles = ", ".join(f"{n} {role}" for role, n in cost.trials_by_role.items())
    rows = [("trials", f"{cost.trials} ({roles})" if cost.trials else "0"),
            ("wall time", seconds(cost.wall_s)),
            ("strategy", f"{settings.get('strategy', '?')} (seed {settings.get('seed', '?')})")]
    if run.info.get("stopped_because"):
        rows.append(("search stopped", run.info["stopped_because"]))
    if cost.grid_trials is not None:
        estimate = seconds(cost.grid_estimate_s)
        rows.append(("a full grid",
                     f"{cost.grid_trials} trials, about {estimate} (estimated from the measured trials)"))
        if cost.grid_estimate_s and cost.wall_s:
            saved = cost.grid_estimate_s - cost.wall_s
            rows.append(("time saved vs the grid", f"{seconds(saved)} ({saved / cost.grid_estimate_s:.0%})"
                         if saved > 0 else "none: the search cost as much as the grid would have"))
    else:
        rows.append(("a full grid", "unknown: the run did not record its search space"))
    return Section("search", "Search and its cost", (Figure(plot), Facts(tuple(rows))))


def lever_rows(run: Run) -> list[tuple[str, str, str, float | None, float | None, float | None, str]]:
    """Each configuration measured with a lever beside the same configuration without it:
    (lever title, configuration, plain configuration, its samples/s, the plain's, the one-time
    cost in seconds, graph breaks), per lever in stage order. `compare` reads these too."""
    out = []
    evidence = run.evidence
    for lever in levers.registered():
        if lever.explore == "repair":
            continue  # the islands' cost is the recommendation's reason, not a speed lever's gain
        for config in evidence.configs.values():
            value = dict(config.candidate.levers).get(lever.name)
            if value is None:
                continue
            plain = evidence.config(config.candidate.plain)
            breaks = [r.result.lever_stats.get(f"{lever.name}.graph_breaks") for r in config.records]
            known = [b for b in breaks if b is not None]
            out.append((lever.title, config.candidate.label, config.candidate.plain.label, config.score,
                        plain.score if plain else None, config.one_time_s,
                        f"{max(known):.0f}" if known else "–"))
    return out


def _levers(run: Run) -> tuple[Section, ...]:
    """The levers tried (levers/): each against the same configuration without it."""
    rows = lever_rows(run)
    if not rows:
        return ()
    cells = []
    for title, label, plain_label, score, plain, cost, breaks in rows:
        ratio = score / plain if score and plain else None
        cells.append((Cell(title), Cell(label), Cell(plain_label), _num(score), _num(plain),
                      Cell(f"{ratio:.2f}x" if ratio else "–", ratio, "num"), Cell(seconds(cost), cost, "num"),
                      Cell(breaks, kind="num")))
    chosen = run.recommendation.levers if run.recommendation else {}
    verdict = (f"recommended: {levers.label(chosen)}" if chosen else
               "recommended without them: no lever paid for itself over the planned run "
               f"({run.settings.get('train_steps', '?')} steps, --train-steps)")
    table = Table(("lever", "configuration", "without it", "samples/s", "without, samples/s", "gain", "one-time cost",
                   "graph breaks"), tuple(cells))
    return (Section("levers", "Levers: each against the same configuration without it", (Para(verdict), table)),)


def _num(value: float | None) -> Cell:
    return Cell(number(value), value, "num")


def _trials(run: Run) -> Section:
    ranked = bool(run.ranked)
    columns: tuple[str, ...] = ("#", "role", "dtype", "batch", *(("reduce",) if ranked else ()),
                                "scaler (init / growth)", "status", "samples/s", "step ms (± IQR)", "peak memory",
                                "TFLOP/s", "loss vs fp32", "skipped", "wall")
    rows, notes = [], []
    chosen = run.recommended_candidate()
    highlight = set()
    for i, r in enumerate(run.records):
        res, c = r.result, r.candidate
        steps = res.step_time_s
        status_kind = "ok" if r.feasible else ("pruned" if res.status is Status.PRUNED else "failed")
        status = res.status.value if r.feasible or res.status is not Status.OK else "rejected"
        if chosen is not None and c.canonical() == chosen.canonical() and r.feasible:
            highlight.add(i)
        rows.append((
            Cell(str(r.number), r.number, "num"),
            Cell(r.role.value + (f" {r.round}" if r.round is not None else ""), r.role.value), Cell(str(c.dtype)),
            Cell(str(c.batch_size) + (f" x{res.spec.grad_accum}" if res.spec.grad_accum > 1 else ""),
                 c.batch_size, "num"),
            *((Cell(c.comm or "–"),) if ranked else ()),
            Cell(f"{scale_text(c.init_scale)} / {c.growth_interval}" if c.dtype.needs_grad_scaler else "–",
                 c.init_scale * 1e6 + c.growth_interval, "num"),
            Cell(status, status, status_kind),
            Cell(number(res.samples_per_s), res.samples_per_s, "num"),
            Cell(f"{steps.median * 1e3:.1f} ± {steps.iqr * 1e3:.1f}" if steps else "–",
                 steps.median if steps else None, "num"),
            Cell(gib(res.peak_memory_bytes), res.peak_memory_bytes, "num"),
            Cell(number(res.tflops, ".3g"), res.tflops, "num"),
            Cell("reference" if c.dtype is Dtype.FP32 else
                 f"{res.loss_rel_diff_vs_fp32:.2%}" if res.loss_rel_diff_vs_fp32 is not None else "–",
                 res.loss_rel_diff_vs_fp32, "num"),
            Cell(str(res.skipped_steps) if res.skipped_steps is not None else "–", res.skipped_steps, "num"),
            Cell(seconds(res.wall_s), res.wall_s, "num"),
        ))
        notes.append(r.why_not or res.error or "")
    if not rows:
        return Section("trials", "Trials", (Para("No trials yet."),))
    intro = Para(f"Every trial the run recorded, in order ({sum(1 for r in run.records if not r.feasible)} not "
                 "usable, with the reason). Step times are per optimizer step; loss vs fp32 is the relative "
                 "difference over the first steps (warm-up included) from the same weights and batches. "
                 "Also in trials.csv.")
    table = Table(columns, tuple(rows), sortable=True, highlight=frozenset(highlight), row_notes=tuple(notes),
                  note_column="why not / error")
    return Section("trials", "Trials", (intro, table))


def _caveats(run: Run) -> Section:
    items = run.caveats() + [f"Note from the run: {n}" for n in run.notes]
    if run.recommendation is not None:
        items += [f"Note from the recommendation: {n}" for n in run.recommendation.notes if n not in run.notes]
    return Section("caveats", "Caveats and notes", (Bullets(tuple(items)) if items else Para("None."),))
