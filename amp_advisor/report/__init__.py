"""The report of a tune run: report.md (plots as PNG files in plots/) and a self-contained
report.html, both from what the run directory holds.

    load_run(dir) -> Run (run.py) -> plots (plots.py) -> Document (document.py)
                  -> markdown.py / html.py
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInputError
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
    written = []
    try:
        plot_dir.mkdir(exist_ok=True)
        for plot in plots:
            path = plot_dir / f"{plot.name}.png"
            if plot.png:
                written.append(write_text_atomic(path, plot.png))
            elif path.exists():
                path.unlink()  # a stale plot from an earlier render would contradict the report
        md = write_text_atomic(run.dir / "report.md", markdown.render(doc, PLOT_DIR))
        page = write_text_atomic(run.dir / "report.html", html.render(doc))
    except OSError as exc:  # a full or read-only disk: the run's own files are untouched
        raise BadInputError(f"{exc.filename or run.dir}: {exc.strerror or exc}; the report was not (fully) "
                            f"written, the run's data is untouched: free the disk and run "
                            f"`amp-advisor report {shlex.quote(str(run.dir))}`") from None
    return ReportFiles(md, page, tuple(written), tuple(run.missing))
