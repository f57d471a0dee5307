"""The report of a tune run: report.md (plots as PNG files in plots/) and a self-contained
report.html, both from what the run directory holds.

    load_run(dir) -> Run (run.py) -> plots (plots.py) -> Document (document.py)
                  -> markdown.py / html.py
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..jsonio import write_text_atomic
from .document import build
from .run import Run, load_run

__all__ = ["write_report", "load_run", "Run", "ReportFiles"]

PLOT_DIR = "plots"


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    html: Path
    plots: tuple[Path, ...]
    missing: tuple[str, ...]  # what the run directory lacked (the report says so too)


def write_report(run_dir: str | os.PathLike) -> ReportFiles:
    """(Re)write report.md, report.html and plots/*.png in `run_dir` from its trials and recommendation."""
    from . import html, markdown
    from .plots import draw_all

    run: Run = load_run(run_dir)
    plots = draw_all(run)
    doc = build(run, plots)
    plot_dir = run.dir / PLOT_DIR
    plot_dir.mkdir(exist_ok=True)
    written = []
    for plot in plots:
        path = plot_dir / f"{plot.name}.png"
        if plot.png:
            path.write_bytes(plot.png)
            written.append(path)
        elif path.exists():
            path.unlink()  # a stale plot from an earlier render would contradict the report
    md = write_text_atomic(run.dir / "report.md", markdown.render(doc, PLOT_DIR))
    page = write_text_atomic(run.dir / "report.html", html.render(doc))
    return ReportFiles(md, page, tuple(written), tuple(run.missing))
