"""Runs side by side (`amp-advisor compare RUN_DIR RUN_DIR...`): the same workload on two machines,
or before and after a change. Device, recommendation, speedup vs fp32, throughput and memory per
configuration, in the terminal (a rich table) and as one self-contained HTML page with a
comparison plot, rendered by the report's own html.py (same conventions as report.html).

Read-only, like the report: every run is read with load_run. Runs of different workloads are
refused unless forced: their figures would not be comparable.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from rich.console import Group, RenderableType
from rich.text import Text

from .. import levers
from ..console import count, grid
from ..dtypes import Dtype
from ..errors import BadInputError
from ..jsonio import write_text_atomic
from ..workload_source import Kind, readable
from .document import Cell, Document, Facts, Figure, Para, Section, Table, gib, number
from .plots import DTYPE_COLORS, Plot, new_figure, to_png
from .run import Run, load_run

LOG_SCALE_ABOVE = 20.0  # the plot's throughput axis goes logarithmic when runs differ by more than this


@dataclass(frozen=True)
class Compared:
    """One run of a comparison, with the figures the comparison shows."""

    name: str  # the shortest tail of its path that tells it from the others
    run: Run

    @property
    def device(self) -> str:
        return f"{self.run.device_name} ({self.run.settings.get('device', '?')})"

    @property
    def hardware(self) -> str:
        """What decides mixed precision there: a GPU's compute capability, a CPU's reduced-precision
        instructions."""
        dev = self.run.device
        if dev is None:
            return "–"
        ident = dev.identity
        capability = getattr(ident, "compute_capability", None)
        if capability:
            return f"compute capability {capability}"
        isa = getattr(ident, "isa", None) or {}
        return ", ".join(flag for flag, has in isa.items() if has) or "–"

    @property
    def recommendation(self) -> str:
        rec = self.run.recommendation
        if rec is None:
            return f"none ({self.run.no_recommendation_why or 'no recommendation.json'})"
        accum = f" x {rec.grad_accumulation_steps}" if rec.grad_accumulation_steps > 1 else ""
        chosen = f", {levers.label(rec.levers)}" if rec.levers else ""
        return f"{rec.dtype}, batch {rec.batch_size}{accum}{chosen}"

    def best_per_config(self) -> dict[str, tuple[float, int | None]]:
        """Configuration label -> (best clean samples/s, peak memory)."""
        return {c.candidate.label: (c.score, c.peak_memory_bytes) for c in self.run.configs() if c.score}

    def best_per_dtype(self) -> dict[Dtype, float]:
        best: dict[Dtype, float] = {}
        for c in self.run.configs():
            if c.score:
                best[c.candidate.dtype] = max(best.get(c.candidate.dtype, 0.0), c.score)
        return best


@dataclass(frozen=True)
class Comparison:
    runs: tuple[Compared, ...]
    workload: str  # as the first run was given it
    forced_over: str | None  # why the runs did not count as one workload, when --force overrode it

    def per_config(self) -> list[tuple[str, list[tuple[float, int | None] | None]]]:
        """Every configuration any run measured cleanly, by dtype then batch size, with each run's
        (best samples/s, peak memory) for it, None where that run has no clean measurement."""
        order = {d: i for i, d in enumerate(Dtype)}
        seen = {}
        for compared in self.runs:
            for c in compared.run.configs():
                if c.score:
                    seen[c.candidate.label] = (order[c.candidate.dtype], c.candidate.batch_size, c.candidate.label)
        best = [c.best_per_config() for c in self.runs]
        return [(label, [b.get(label) for b in best]) for label, _ in sorted(seen.items(), key=lambda item: item[1])]


def compare(run_dirs: list[str | os.PathLike], force: bool = False) -> Comparison:
    """Read the runs; refuse fewer than two, a directory that is not a run, or (unless `force`) runs
    of different workloads."""
    if len(run_dirs) < 2:
        raise BadInputError(f"compare needs two run directories or more, got {len(run_dirs)}: "
                            "amp-advisor compare RUN_DIR RUN_DIR...")
    seen: dict[Path, str] = {}
    for d in run_dirs:
        if (key := Path(d).resolve()) in seen:
            raise BadInputError(f"{d} is the same run directory as {seen[key]}: compare needs two different runs")
        seen[key] = str(d)
    runs = [load_run(d) for d in run_dirs]
    for run in runs:
        if not run.info.get("settings"):
            why = next((m for m in run.missing if m.startswith("run.json")), "run.json holds no settings")
            raise BadInputError(f"{run.dir}: {why}; compare needs each run's settings to know what it tuned")
    names = _names([r.dir for r in runs])
    identities = [_identity(r) for r in runs]
    differ = None
    if any(not _same(identities[0], other) for other in identities[1:]):
        described = "; ".join(f"{name} tunes {_describe(run)}" for name, run in zip(names, runs, strict=True))
        differ = f"the runs are of different workloads ({described})"
        if not force:
            raise BadInputError(f"{differ}: their figures do not compare; pass --force to put them side by side "
                                "anyway")
    return Comparison(tuple(Compared(n, r) for n, r in zip(names, runs, strict=True)), runs[0].workload, differ)


Identity = tuple[str, str | None, int | None]


def _identity(run: Run) -> Identity:
    """What makes two runs one workload: how it was named (a file by its name, so that the same
    model.py on two machines matches), and the model it built, when the trials recorded it."""
    ref = run.settings.get("workload", "")
    source = readable(ref)
    if source is None:
        named = ref
    elif source.kind is Kind.FILE:
        named = f"file {Path(source.target).name}"
    elif source.kind is Kind.HF and source.hf is not None and source.hf.config_path is not None:
        named = f"hf-config {source.name} {source.hf.sizes}"  # the same config.json in another place
    else:
        named = source.shown()
    built = run.built_model
    return named, built.architecture if built else None, built.parameters if built else None


def _same(a: Identity, b: Identity) -> bool:
    """The same name, and the same model wherever both runs recorded one."""
    return a[0] == b[0] and all(x is None or y is None or x == y for x, y in zip(a[1:], b[1:], strict=True))


def _describe(run: Run) -> str:
    built = run.built_model
    if built is None or built.parameters is None:
        return run.workload
    return f"{run.workload}: {built.architecture}, {count(built.parameters)} parameters"


def _names(dirs: list[Path]) -> list[str]:
    """The shortest path tails that tell the runs apart (cpu/transformer vs gpu/transformer)."""
    parts = [d.resolve().parts for d in dirs]
    for k in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-k:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [str(d) for d in dirs]  # the same directory twice


# ------------------------------------------------------------------------------ the figures
def _rows(comparison: Comparison) -> list[tuple[str, list[str]]]:
    """The side-by-side facts: (label, one value per run)."""
    runs = comparison.runs

    def each(fn) -> list[str]:
        return [fn(c) for c in runs]

    def measured(c: Compared, attr: str, fmt: str, unit: str = "") -> str:
        rec = c.run.recommendation
        value = getattr(rec.measured, attr) if rec else None
        return "–" if value is None else f"{value:{fmt}}{unit}"

    built = [c.run.built_model for c in runs]
    return [
        ("device", each(lambda c: c.device)),
        ("hardware", each(lambda c: c.hardware)),
        ("torch", each(lambda c: str((c.run.recommendation.hardware if c.run.recommendation else {})
                                     .get("torch", "–")))),
        ("run", each(lambda c: f"{c.run.state}, {len(c.run.records)} trials")),
        ("model", [f"{b.architecture}, {count(b.parameters)} parameters" if b and b.parameters is not None
                   else "–" for b in built]),
        ("recommendation", each(lambda c: c.recommendation)),
        ("samples/s", each(lambda c: measured(c, "samples_per_s", ".1f"))),
        ("vs fp32, same batch", each(lambda c: measured(c, "speedup_vs_fp32", ".2f", "x"))),
        ("vs the best fp32", each(lambda c: measured(c, "speedup_vs_best_fp32", ".2f", "x"))),
        ("peak memory", each(lambda c: gib(c.run.recommendation.measured.peak_memory_bytes)
                             if c.run.recommendation else "–")),
    ]


def render_comparison(comparison: Comparison) -> RenderableType:
    """The terminal's view: the facts side by side, then samples/s per configuration."""
    names = [c.name for c in comparison.runs]
    side = grid("", *names, title=f"{comparison.workload}, {len(names)} runs side by side")
    for label, values in _rows(comparison):
        side.add_row(Text(label, style="bold"), *values)
    per_config = grid("configuration", *(f"{n} samples/s" for n in names), title="throughput per configuration "
                      "(best clean measurement; – not measured or not clean)")
    for column in per_config.columns[1:]:
        column.justify = "right"
    for label, measured in comparison.per_config():
        per_config.add_row(label, *(f"{m[0]:.1f}" if m else "–" for m in measured))
    parts: list[RenderableType] = [side, Text(""), per_config]
    if comparison.forced_over:
        parts.insert(0, Text(f"forced: {comparison.forced_over}", style="yellow"))
    return Group(*parts)


def comparison_plot(comparison: Comparison) -> Plot:
    title = "Best throughput per dtype, run by run"
    caption = ("Each dtype's best clean samples/s in each run (any batch size); the star marks the dtype each run "
               "recommends, and the number over it its speedup vs fp32 at the same batch.")
    best = [c.best_per_dtype() for c in comparison.runs]
    dtypes = [d for d in DTYPE_COLORS if any(d in b for b in best)]
    if not dtypes:
        return Plot("compare", title, caption, None, "no run has a clean measurement")
    fig = new_figure()
    ax = fig.add_subplot()
    width = 0.8 / len(dtypes)
    values = [v for b in best for v in b.values()]
    log = max(values) / min(values) > LOG_SCALE_ABOVE
    for i, dtype in enumerate(dtypes):
        xs = [r + (i - (len(dtypes) - 1) / 2) * width for r in range(len(best))]
        ax.bar(xs, [b.get(dtype, 0.0) for b in best], width * 0.92, color=DTYPE_COLORS[dtype], label=str(dtype))
    for r, compared in enumerate(comparison.runs):
        rec = compared.run.recommendation
        if rec is None or rec.dtype not in dtypes or rec.dtype not in best[r]:
            continue
        x = r + (dtypes.index(rec.dtype) - (len(dtypes) - 1) / 2) * width
        top = best[r][rec.dtype]
        ax.plot([x], [top], "*", color="#f1c40f", markeredgecolor="#333", markersize=14, zorder=5)
        if rec.measured.speedup_vs_fp32:
            ax.annotate(f"{rec.measured.speedup_vs_fp32:.2f}x", (x, top), textcoords="offset points", xytext=(0, 9),
                        ha="center", fontsize=8)
    ax.set_xticks(range(len(best)), [_wrapped(c.name) for c in comparison.runs], fontsize=8)
    if log:
        ax.set_yscale("log")
        caption += f" The axis is logarithmic: the runs differ by more than {LOG_SCALE_ABOVE:g}x."
    else:
        ax.set_ylim(0, max(values) * 1.18)
    ax.set_ylabel("samples / s")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, title="dtype", title_fontsize=8)
    return Plot("compare", title, caption, to_png(fig))


def _wrapped(name: str, width: int = 22) -> str:
    """A run's name under its bars, broken at its slashes when long."""
    if len(name) <= width:
        return name
    return name.replace("/", "/\n")


def document(comparison: Comparison, plot: Plot) -> Document:
    names = tuple(c.name for c in comparison.runs)
    side = Table(("",) + names, tuple((Cell(label, kind=""),) + tuple(Cell(v) for v in values)
                                     for label, values in _rows(comparison)))
    rows = [(Cell(label), *(_num_cell(m and m[0], number) for m in measured),
             *(_num_cell(m and m[1], gib) for m in measured)) for label, measured in comparison.per_config()]
    per_config = Table(("configuration", *(f"{n}: samples/s" for n in names), *(f"{n}: peak memory" for n in names)),
                       tuple(rows), sortable=True)
    where = Facts(tuple((c.name, str(c.run.dir)) for c in comparison.runs))
    intro = [Para(f"Forced: {comparison.forced_over}.")] if comparison.forced_over else []
    sections = (
        Section("side-by-side", "Side by side", (*intro, side)),
        Section("plot", "Throughput", (Figure(plot),)),
        Section("configurations", "Every configuration", (
            Para("The best clean measurement of each configuration in each run (– where a run did not measure it, "
                 "or it failed or broke fp32's numerics there). Click a heading to sort."), per_config)),
        Section("runs", "Run directories", (where,)),
    )
    subtitle = f"{comparison.workload}: {len(names)} runs ({', '.join(names)})"
    return Document("amp-advisor: runs compared", subtitle, (), sections)


def _num_cell(value: float | None, text) -> Cell:
    """A number sorted by its value; "–" (sorted last) where there is none."""
    return Cell(text(value), value, "num") if value else Cell("–", None, "num")


def comparison_path(out: str | os.PathLike | None) -> Path:
    """Where the page goes: `out`, or reports/<timestamp>-compare.html; a directory is refused."""
    if out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        return Path("reports") / f"{stamp}-compare.html"
    path = Path(out)
    if path.is_dir():
        raise BadInputError(f"--out {path}: is a directory; give the HTML file to write, e.g. {path}/compare.html")
    return path


def write_comparison(comparison: Comparison, out: str | os.PathLike | None = None) -> Path:
    """The self-contained HTML page; by default reports/<timestamp>-compare.html."""
    from . import html

    path = comparison_path(out)
    page = html.render(document(comparison, comparison_plot(comparison)))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_text_atomic(path, page)
    except OSError as exc:  # a full or read-only disk: the runs compared are only read
        raise BadInputError(f"{exc.filename or path}: {exc.strerror or exc}; the comparison page was not written: "
                            "give --out a writable place") from None
