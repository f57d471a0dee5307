"""report.md: the Document as GitHub-flavoured Markdown; plots are PNG files beside it."""

from __future__ import annotations

from .document import Bullets, Cards, Code, Document, Facts, Figure, Para, Table


def _escape_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(columns, rows) -> list[str]:
    out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    out += ["| " + " | ".join(_escape_cell(cell) for cell in row) + " |" for row in rows]
    return out


def render(doc: Document, plot_dir: str) -> str:
    lines = [f"# {doc.title}", "", f"_{doc.subtitle}_", ""]
    if doc.partial:
        lines += ["> **Partial report.** " + " ".join(f"{m}." if not m.endswith(".") else m for m in doc.partial), ""]
    for section in doc.sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Cards):
                lines += [f"- **{c.label}: {c.value}**" + (f" — {c.detail}" if c.detail else "") for c in block.cards]
            elif isinstance(block, Para):
                lines.append(block.text)
            elif isinstance(block, Bullets):
                lines += [f"- {item}" for item in block.items]
            elif isinstance(block, Facts):
                lines += _table(("", ""), [(f"**{k}**", v) for k, v in block.rows])
            elif isinstance(block, Table):
                columns = block.columns + ((block.note_column,) if block.row_notes else ())
                rows = [[cell.text for cell in row] + ([block.row_notes[i]] if block.row_notes else [])
                        for i, row in enumerate(block.rows)]
                lines += _table(columns, rows)
            elif isinstance(block, Code):
                lines += [f"```{block.language}", block.text.rstrip("\n"), "```"]
            elif isinstance(block, Figure):
                plot = block.plot
                lines.append(f"### {plot.title}")
                lines.append("")
                if plot.png:
                    lines.append(f"![{plot.title}]({plot_dir}/{plot.name}.png)")
                else:
                    lines.append(f"_Not shown: {plot.missing}._")
                lines += ["", f"_{plot.caption}_"]
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
