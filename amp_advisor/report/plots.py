"""The report's plots, drawn with matplotlib's object API (no pyplot: no global state, no GUI
backend) and returned as PNG bytes. A plot that has nothing to show says why instead.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..dtypes import FP16_MAX, FP16_MIN_SUBNORMAL, Dtype
from ..harness.trial import Status
from .run import Run

DTYPE_COLORS = {Dtype.FP32: "#3b6ea8", Dtype.TF32: "#7b5ea7", Dtype.BF16: "#2e8b57", Dtype.FP16: "#c0392b",
                Dtype.FP8: "#b7791f"}
FAILURE_MARKERS = {Status.OOM: "v", Status.TIMEOUT: "s", Status.CRASH: "X", Status.NONFINITE: "D", Status.ERROR: "P",
                   Status.PRUNED: ">"}
BF16_MIN_SUBNORMAL_LOG2 = -133  # smallest bf16 magnitude (subnormal); fp32's range, 8 mantissa bits
BF16_MAX_LOG2 = 128  # bf16 max is just under 2^128
FIG_SIZE = (7.2, 3.9)  # inches; at 110 dpi the page shows it 792 px wide
DPI = 110
PNG_DPI = 180  # drawn sharper than shown, for high-density screens and zooming


@dataclass(frozen=True)
class Plot:
    name: str  # file stem
    title: str
    caption: str  # what to read from it
    png: bytes | None
    missing: str | None = None  # why it is not drawn


def new_figure():
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIG_SIZE, dpi=DPI, layout="constrained")
    return fig


def to_png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    FigureCanvasAgg(fig)
    for text in fig.findobj(Text):  # a label is data (a run directory named "$x$"), never mathtext
        text.set_parse_math(False)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=PNG_DPI)
    return buffer.getvalue()


def _batch_axis(ax, sizes: list[int]) -> None:
    ax.set_xscale("log", base=2)
    ticks = sorted(set(sizes))
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("batch size")


def _failure_kind(record) -> Status:
    """The marker a not-usable trial gets: how it ended; one that ran but broke numerics is an "error"."""
    return record.result.status if record.result.status is not Status.OK else Status.ERROR


def _failure_legend(statuses: set[Status]) -> list:
    from matplotlib.lines import Line2D

    return [Line2D([], [], marker=FAILURE_MARKERS[s], color="#444", linestyle="", label=str(s))
            for s in sorted(statuses)]


def _spread(x: float, dtype: Dtype) -> float:
    """Failure markers of different dtypes at one batch size sit side by side instead of on top."""
    return x * 2 ** (0.07 * (list(DTYPE_COLORS).index(dtype) - 1.5))


def _gib(value: float) -> float:
    return value / 2**30


def _line_per_dtype(ax, configs, value) -> None:
    """One line per dtype over batch size; fp16's scaler settings share a size: the highest value."""
    for dtype in DTYPE_COLORS:
        points: dict[int, float] = {}
        for c in configs:
            if c.candidate.dtype is dtype:
                points[c.candidate.batch_size] = max(points.get(c.candidate.batch_size, 0.0), value(c))
        if points:
            xs = sorted(points)
            ax.plot(xs, [points[x] for x in xs], "-o", color=DTYPE_COLORS[dtype], label=str(dtype))


def throughput_vs_batch(run: Run) -> Plot:
    title = "Throughput vs batch size"
    caption = ("Median samples/s of each clean configuration, per dtype (fp16: the best scaler setting at each "
               "size). Failed trials sit on the bottom edge, marked by how they failed.")
    configs = [c for c in run.configs() if c.score]
    failed = [r for r in run.records if r.result.status is not Status.OK or not r.feasible]
    if not configs and not failed:
        return Plot("throughput", title, caption, None, "no trials yet")
    fig = new_figure()
    ax = fig.add_subplot()
    sizes = [r.candidate.batch_size for r in run.records]
    _line_per_dtype(ax, configs, lambda c: c.score)
    statuses = set()
    for r in failed:
        status = _failure_kind(r)
        statuses.add(status)
        ax.plot([_spread(r.candidate.batch_size, r.candidate.dtype)], [0], FAILURE_MARKERS[status],
                color=DTYPE_COLORS[r.candidate.dtype], markersize=8, clip_on=False, zorder=5)
    rec = run.recommendation
    if rec is not None and rec.measured.samples_per_s:
        ax.plot([rec.batch_size], [rec.measured.samples_per_s], "*", color="#f1c40f", markeredgecolor="#333",
                markersize=16, zorder=6, label="recommended")
    _batch_axis(ax, sizes)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("samples / s")
    ax.grid(alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=handles + _failure_legend(statuses), loc="upper left", bbox_to_anchor=(1.01, 1),
              fontsize=8, title="dtype / failure", title_fontsize=8)
    return Plot("throughput", title, caption, to_png(fig))


def memory_vs_batch(run: Run) -> Plot:
    title = "Peak memory vs batch size"
    caption = ("Measured peak memory per configuration and dtype; the dashed line is the limit the tuner used "
               "(device memory less its safety margin). Out-of-memory trials are marked at the limit.")
    configs = [c for c in run.configs() if c.peak_memory_bytes]
    if not configs:
        return Plot("memory", title, caption, None, "no trial measured its peak memory")
    fig = new_figure()
    ax = fig.add_subplot()
    _line_per_dtype(ax, configs, lambda c: _gib(c.peak_memory_bytes))
    limit = run.memory_limit_bytes
    highest = max(c.peak_memory_bytes or 0 for c in configs)
    ooms = [r for r in run.records if r.result.status is Status.OOM]
    if limit and (limit <= 4 * highest or ooms):
        ax.axhline(_gib(limit), color="#555", linestyle="--", linewidth=1)
        ax.annotate(f"limit {_gib(limit):.1f} GiB", (0.01, _gib(limit)), xycoords=("axes fraction", "data"),
                    textcoords="offset points", xytext=(2, -11), fontsize=8, color="#555")
        for r in ooms:
            ax.plot([_spread(r.candidate.batch_size, r.candidate.dtype)], [_gib(limit)], FAILURE_MARKERS[Status.OOM],
                    color=DTYPE_COLORS[r.candidate.dtype], markersize=9, zorder=5)
        if ooms:
            ax.plot([], [], FAILURE_MARKERS[Status.OOM], color="#444", linestyle="", label="oom")
    elif limit:  # drawn to scale, the limit would flatten every point into the bottom edge
        ax.text(0.01, 0.97, f"limit {_gib(limit):.1f} GiB: far above, not drawn to scale", transform=ax.transAxes,
                va="top", fontsize=8, color="#555")
    _batch_axis(ax, [r.candidate.batch_size for r in run.records])
    ax.set_ylim(bottom=0)
    ax.set_ylabel("peak memory (GiB)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    return Plot("memory", title, caption, to_png(fig))


def search_progress(run: Run) -> Plot:
    title = "Search: best so far"
    caption = ("Each search trial's samples/s (failed or stopped trials on the bottom edge) and the best clean "
               "result up to that trial: where the line goes flat, the search had found its answer.")
    series = run.best_so_far()
    if not series:
        return Plot("search", title, caption, None, "no search trials yet")
    fig = new_figure()
    ax = fig.add_subplot()
    by_number = {r.number: r for r in run.records}
    failures = set()
    for number, score, _ in series:
        r = by_number[number]
        color = DTYPE_COLORS[r.candidate.dtype]
        if score is not None:
            ax.plot([number], [score], "o", color=color, alpha=0.8)
        else:
            failures.add(_failure_kind(r))
            ax.plot([number], [0], FAILURE_MARKERS[_failure_kind(r)], color=color, clip_on=False, zorder=5)
    steps = [(n, b) for n, _, b in series if b is not None]
    if steps:
        ax.step([n for n, _ in steps], [b for _, b in steps], where="post", color="#222", linewidth=1.5)
    from matplotlib.lines import Line2D

    dtypes = sorted({by_number[n].candidate.dtype for n, _, _ in series}, key=list(DTYPE_COLORS).index)
    handles = [Line2D([], [], color="#222", label="best so far")]
    handles += [Line2D([], [], marker="o", linestyle="", color=DTYPE_COLORS[d], label=str(d)) for d in dtypes]
    handles += _failure_legend(failures)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    ax.set_xlabel("trial number")
    ax.set_ylabel("samples / s")
    ax.set_ylim(bottom=0)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    return Plot("search", title, caption, to_png(fig))


def gradient_ranges(run: Run) -> Plot:
    title = "Gradient magnitudes vs fp16 and bf16 ranges"
    trial = run.recommended_trial()
    if trial is None or trial.result.grad_stats is None:
        trial = _first_with_grads(run)
    scale = run.recommendation.scaler.init_scale if run.recommendation and run.recommendation.scaler.enabled else None
    caption = ("log2 histogram of the fp32 gradients (one step of the trial shown) against what each format can "
               "hold. fp16 keeps |g| in [2^-24, 65504] unscaled; GradScaler multiplies gradients by the loss "
               "scale, which shifts that window left by log2(scale). bf16 has fp32's range.")
    if trial is None or trial.result.grad_stats is None or not trial.result.grad_stats.log2_histogram:
        return Plot("gradients", title, caption, None, "no trial recorded gradient statistics")
    hist = trial.result.grad_stats.log2_histogram
    fp16_lo, fp16_hi = math.log2(FP16_MIN_SUBNORMAL), math.log2(FP16_MAX)
    windows = [("bf16", BF16_MIN_SUBNORMAL_LOG2, BF16_MAX_LOG2, DTYPE_COLORS[Dtype.BF16]),
               ("fp16, no scaling", fp16_lo, fp16_hi, "#e8a39b")]
    if scale:
        windows.append((f"fp16 at the recommended loss scale 2^{math.log2(scale):g}", fp16_lo - math.log2(scale),
                        fp16_hi - math.log2(scale), DTYPE_COLORS[Dtype.FP16]))
    elif run.context.get("init_scale_seed"):
        scale = run.context["init_scale_seed"]
        windows.append((f"fp16 at the tuner's seeded scale 2^{math.log2(scale):g} (not recommended here)",
                        fp16_lo - math.log2(scale), fp16_hi - math.log2(scale), DTYPE_COLORS[Dtype.FP16]))
    lo = min(min(hist), *(w[1] for w in windows[1:])) - 2
    hi = max(max(hist) + 1, *(w[2] for w in windows[1:])) + 2
    fig = new_figure()
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[1, 3])
    for y, (label, start, end, color) in enumerate(windows):
        top.barh(y, min(end, hi) - max(start, lo), left=max(start, lo), color=color, height=0.6)
        beyond = " (range continues past the axis)" if start < lo or end > hi else ""
        top.text(max(start, lo) + 0.5, y, label + beyond,
                 va="center", fontsize=8, color="white" if color != "#e8a39b" else "#222")
    top.set_yticks([])
    top.set_ylim(-0.5, len(windows) - 0.5)
    top.set_xlim(lo, hi)
    top.set_title("representable |g| (log2)", fontsize=9, loc="left")
    xs = sorted(hist)
    total = sum(hist.values())
    bottom.bar(xs, [hist[x] / total for x in xs], width=0.9, align="edge", color="#5d6d7e")
    below = [f"below fp16's smallest, unscaled: {_fraction_below(hist, fp16_lo):.2%}"]
    bottom.axvline(fp16_lo, color="#e8a39b", linestyle=":", linewidth=1)
    if scale:
        edge = fp16_lo - math.log2(scale)
        bottom.axvline(edge, color=DTYPE_COLORS[Dtype.FP16], linestyle="--", linewidth=1)
        below.append(f"at scale 2^{math.log2(scale):g}: {_fraction_below(hist, edge):.2%}")
    bottom.text(0.99, 0.95, "\n".join(below), transform=bottom.transAxes, ha="right", va="top", fontsize=8,
                bbox={"facecolor": "white", "edgecolor": "#ccc", "alpha": 0.9})
    bottom.set_xlabel("log2 |gradient|")
    bottom.set_ylabel("fraction of elements")
    bottom.grid(alpha=0.3)
    bottom.set_title(f"trial {trial.number}: {trial.candidate.label}", fontsize=9, loc="left")
    return Plot("gradients", title, caption, to_png(fig))


def _fraction_below(hist: Mapping[int, int], log2_edge: float) -> float:
    """Elements whose magnitude is under 2^log2_edge (bins are [2^k, 2^(k+1)); a straddling bin counts whole)."""
    total = sum(hist.values())
    return sum(n for k, n in hist.items() if k < log2_edge) / total if total else 0.0


def _first_with_grads(run: Run):
    return next((r for r in run.records if r.result.grad_stats is not None and r.result.grad_stats.log2_histogram),
                None)


def loss_vs_fp32(run: Run) -> Plot:
    title = "Loss: recommended vs fp32"
    caption = ("Training loss from the first step (warm-up shaded), from the same initial weights and batches; the "
               "relative difference is over the steps the fp32 reference ran. When the "
               "recommendation is fp32 itself, the closest reduced-precision trial is compared instead.")
    trial = run.recommended_trial()
    if trial is not None and not trial.result.fp32_losses:
        # fp32 is its own reference: show the reduced-precision trial that came closest to it, if any
        compared = [r for r in run.records if r.result.fp32_losses and r.result.all_losses]
        if compared:
            baseline = trial
            trial = min(compared, key=lambda r: r.result.loss_rel_diff_vs_fp32 if r.result.loss_rel_diff_vs_fp32
                        is not None else math.inf)
            reference, ref_label = trial.result.fp32_losses, "fp32 (same weights and batches)"
        else:
            baseline, reference, ref_label = trial, (), ""
    elif trial is not None:
        reference, ref_label = trial.result.fp32_losses, "fp32 (same weights and batches)"
    else:
        return Plot("loss", title, caption, None, "no recommended trial to show")
    losses = trial.result.all_losses
    if not losses:
        return Plot("loss", title, caption, None, "the recommended trial recorded no losses")
    fig = new_figure()
    ax = fig.add_subplot()
    ax.plot(range(1, len(losses) + 1), losses, "-o", color=DTYPE_COLORS[trial.candidate.dtype], markersize=3,
            label=f"trial {trial.number}: {trial.candidate.label}")
    if reference:
        ax.plot(range(1, len(reference) + 1), reference, "--", color=DTYPE_COLORS[Dtype.FP32], label=ref_label)
    if trial.result.loss_rel_diff_vs_fp32 is not None and reference:
        ax.set_title(f"relative difference over the first {len(reference)} steps: "
                     f"{trial.result.loss_rel_diff_vs_fp32:.3%}", fontsize=9, loc="left")
    elif not reference:
        ax.set_title(f"{baseline.candidate.label}: fp32 is the reference, and no reduced-precision trial ran long "
                     "enough to compare", fontsize=9, loc="left")
    if trial.result.warmup_losses:
        ax.axvspan(0.5, len(trial.result.warmup_losses) + 0.5, color="#ddd", alpha=0.5, lw=0, label="warm-up (untimed)")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return Plot("loss", title, caption, to_png(fig))


def achieved_tflops(run: Run) -> Plot:
    title = "Achieved TFLOP/s per configuration"
    # The scaler's settings do not change the speed: one bar per dtype and batch size (the best).
    best: dict[tuple[Dtype, int], tuple[float, float | None]] = {}
    for c in run.configs():
        key = (c.candidate.dtype, c.candidate.batch_size)
        if c.tflops and (key not in best or c.tflops > best[key][0]):
            best[key] = (c.tflops, c.mfu)
    peaks = {d: run.peak_tflops(d) for d in DTYPE_COLORS}
    known = {d: p for d, p in peaks.items() if p and any(d is dtype for dtype, _ in best)}
    caption = ("Model FLOPs per second of each clean configuration (counted by torch's FlopCounterMode; fp16: "
               "the best scaler setting). "
               + ("Dashed lines: the device's dense peak per dtype from its datasheet; bar labels give MFU."
                  if known else "The device's peak is not known (no datasheet entry for it), so MFU is not shown."))
    if not best:
        return Plot("tflops", title, caption, None, "no clean trial measured its FLOPs")
    keys = sorted(best, key=lambda k: (list(DTYPE_COLORS).index(k[0]), k[1]))
    fig = new_figure()
    fig.set_size_inches(FIG_SIZE[0], max(FIG_SIZE[1], 1.2 + 0.28 * len(keys)))
    ax = fig.add_subplot()
    values = [best[k][0] for k in keys]
    ax.barh(range(len(keys)), values, color=[DTYPE_COLORS[d] for d, _ in keys], height=0.7)
    for i, key in enumerate(keys):
        tflops, mfu = best[key]
        if mfu is None and (peak := peaks.get(key[0])):
            mfu = tflops / peak
        ax.annotate(f"{tflops:.3g}" + (f"  ({mfu:.0%} MFU)" if mfu else ""), (tflops, i), textcoords="offset points",
                    xytext=(3, 0), va="center", fontsize=8)
    from matplotlib.lines import Line2D

    for dtype, peak in known.items():
        ax.axvline(peak, color=DTYPE_COLORS[dtype], linestyle="--", linewidth=1)
    if known:
        ax.legend(handles=[Line2D([], [], color=DTYPE_COLORS[d], linestyle="--", label=f"{d} peak {p:g}")
                           for d, p in known.items()], loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    else:
        ax.text(0.99, 0.02, "device peak unknown: no MFU", transform=ax.transAxes, ha="right", va="bottom",
                fontsize=8, color="#555")
    ax.set_yticks(range(len(keys)), [f"{d} bs={b}" for d, b in keys], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("TFLOP/s")
    ax.set_xlim(0, max(values + list(known.values())) * 1.2)
    ax.grid(alpha=0.3, axis="x")
    return Plot("tflops", title, caption, to_png(fig))


XRAY_ROWS = 30  # modules shown: the culprits, then those nearest fp16's limit


def numerics_xray(run: Run) -> Plot:
    """Modules x steps of the first diagnosis: how large each module's fp32 output is against
    fp16's range (log10 |value|, the colour's middle at fp16's max), X where the reduced run
    turned it inf/NaN."""
    title = "Numerics X-ray: module outputs against fp16's range"
    if not run.diagnoses:
        return Plot("xray", title, "", None, "no dtype failed on numerics: nothing was diagnosed")
    d = run.diagnoses[0]
    from matplotlib.colors import TwoSlopeNorm

    peaks = [max((v for v in d.series(m, "ref_out_max") if math.isfinite(v)), default=0.0)
             for m in range(len(d.modules))]
    culprits = [d.modules.index(c.module) for c in d.culprits() if c.module in d.modules]
    ranked = sorted(range(len(d.modules)), key=lambda m: (m not in culprits, -peaks[m]))
    rows = sorted(ranked[:XRAY_ROWS])  # forward order, as the model runs
    steps = len(d.values)
    grid = [[math.log10(max(v, 1e-30)) if math.isfinite(v := d.value(s, m, "ref_out_max")) else math.nan
             for s in range(steps)] for m in rows]
    fig = new_figure()
    fig.set_size_inches(FIG_SIZE[0], max(FIG_SIZE[1], 1.0 + 0.22 * len(rows)))
    ax = fig.add_subplot()
    limit = math.log10(FP16_MAX)
    finite = [v for row in grid for v in row if math.isfinite(v)] or [limit]
    norm = TwoSlopeNorm(vcenter=limit, vmin=min(min(finite), limit - 1), vmax=max(max(finite), limit + 1))
    image = ax.imshow(grid, aspect="auto", cmap="RdBu_r", norm=norm, interpolation="nearest")
    for y, m in enumerate(rows):
        for s in range(steps):
            if d.value(s, m, "out_nonfinite") == 1:
                ax.plot([s], [y], "x", color="black", markersize=6)
    ax.set_yticks(range(len(rows)), [f"{d.modules[m][:40]}{' *' if m in culprits else ''}" for m in rows],
                  fontsize=7)
    ax.set_xticks(range(steps), [str(s + 1) for s in range(steps)], fontsize=7)
    ax.set_xlabel("training step")
    bar = fig.colorbar(image, ax=ax)
    bar.set_label("log10 largest |fp32 output|", fontsize=8)
    bar.ax.axhline(limit, color="black", linewidth=1)
    caption = (f"{d.dtype} at batch {d.batch_size}, {steps} steps: each module's largest fp32 output per step "
               "(red beyond fp16's max of 65504, at the black line of the scale); x: the reduced run produced "
               f"inf/NaN there; * a culprit. {len(rows)} of {len(d.modules)} modules shown (the culprits and "
               "the largest), in the order the forward pass finishes them.")
    return Plot("xray", title, caption, to_png(fig))


STRAGGLER_RATIO = 1.10  # a rank whose median step is this much slower than the fastest rank's is a straggler


def rank_step_times(run: Run) -> Plot:
    """Each rank's median step per trial (a distributed run): the spread is how much the slowest
    rank costs, since a step waits for it."""
    title = "Step time per rank"
    rows = run.rank_step_times()
    if not rows:
        return Plot("ranks", title, "", None, "no trial ran on several ranks")
    world = max(len(steps) for _, steps in rows)
    fig = new_figure()
    ax = fig.add_subplot()
    for rank in range(world):
        points = [(n, steps[rank] * 1e3) for n, steps in rows if rank < len(steps)]
        ax.plot([p[0] for p in points], [p[1] for p in points], "o", markersize=4, alpha=0.8, label=f"rank {rank}")
    stragglers = [(n, max(steps) * 1e3) for n, steps in rows if max(steps) > STRAGGLER_RATIO * min(steps)]
    if stragglers:
        ax.plot([p[0] for p in stragglers], [p[1] for p in stragglers], "o", markersize=10, markerfacecolor="none",
                markeredgecolor="#c0392b", label=f"straggler (> {STRAGGLER_RATIO - 1:.0%} over the fastest)")
    values = [s for _, steps in rows for s in steps]
    if max(values) > 10 * min(values):  # steps of very different sizes: a log axis, every decade labelled
        from matplotlib.ticker import LogFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    ax.set_xlabel("trial")
    ax.set_ylabel("median step (ms)")
    ax.legend(fontsize=7, ncols=3, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    caption = (f"{len(rows)} trials on {world} ranks: every rank's median step. A step waits for the slowest rank "
               f"(collectives), so the trial's step is the slowest rank's; {len(stragglers)} trials had a straggler "
               f"(a rank more than {STRAGGLER_RATIO - 1:.0%} slower than the fastest).")
    return Plot("ranks", title, caption, to_png(fig))


PLOTS: tuple[Callable[[Run], Plot], ...] = (throughput_vs_batch, memory_vs_batch, search_progress, gradient_ranges,
                                            loss_vs_fp32, achieved_tflops, numerics_xray, rank_step_times)


def draw_all(run: Run) -> list[Plot]:
    return [draw(run) for draw in PLOTS]
