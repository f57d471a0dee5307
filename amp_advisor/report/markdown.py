"""report.md: the Document as GitHub-flavoured Markdown; plots are PNG files beside it."""

from __future__ import annotations

import re

from .document import Bullets, Cards, Code, Document, Facts, Figure, Para, Table


def _t(text: str) -> str:
    """Text that may carry data (an error message, a path, a workload's name) as Markdown text:
    raw HTML (`<script>`) is escaped outside code spans, so it shows as written and never runs."""
    parts = str(text).split("`")
    for i in range(0, len(parts), 2):  # outside the backtick spans
        parts[i] = parts[i].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if len(parts) % 2 == 0:  # an unmatched backtick: it is data, not a span
        return _t(str(text).replace("`", "'"))
    return "`".join(parts)


def _fence(text: str) -> str:
    """A code fence longer than any run of backticks in `text`: the block cannot be closed early."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _escape_cell(text: str) -> str:
    return _t(text).replace("|", "\\|").replace("\n", " ")


def _table(columns, rows) -> list[str]:
    out = ["| " + " | ".join(_escape_cell(c) for c in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    out += ["| " + " | ".join(_escape_cell(cell) for cell in row) + " |" for row in rows]
    return out


def render(doc: Document, plot_dir: str) -> str:
    lines = [f"# {_t(doc.title)}", "", f"_{_t(doc.subtitle)}_", ""]
    if doc.partial:
        lines += ["> **Partial report.** " + " ".join(_t(f"{m}." if not m.endswith(".") else m) for m in doc.partial),
                  ""]
    for section in doc.sections:
        lines += [f"## {_t(section.title)}", ""]
        for block in section.blocks:
            if isinstance(block, Cards):
                lines += [f"- **{_t(c.label)}: {_t(c.value)}**" + (f" — {_t(c.detail)}" if c.detail else "")
                          for c in block.cards]
            elif isinstance(block, Para):
                lines.append(_t(block.text))
            elif isinstance(block, Bullets):
                lines += [f"- {_t(item)}" for item in block.items]
            elif isinstance(block, Facts):
                lines += _table(("", ""), [(f"**{k}**", v) for k, v in block.rows])
            elif isinstance(block, Table):
                columns = block.columns + ((block.note_column,) if block.row_notes else ())
                rows = [[cell.text for cell in row] + ([block.row_notes[i]] if block.row_notes else [])
                        for i, row in enumerate(block.rows)]
                lines += _table(columns, rows)
            elif isinstance(block, Code):
                fence = _fence(block.text)
                lines += [f"{fence}{block.language}", block.text.rstrip("\n"), fence]
            elif isinstance(block, Figure):
                plot = block.plot
                lines.append(f"### {_t(plot.title)}")
                lines.append("")
                if plot.png:
                    lines.append(f"![{_t(plot.title)}]({plot_dir}/{plot.name}.png)")
                else:
                    lines.append(f"_Not shown: {_t(plot.missing or '')}._")
                lines += ["", f"_{_t(plot.caption)}_"]
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
