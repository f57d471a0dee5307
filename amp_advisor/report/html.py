"""report.html: one self-contained file. Styles and the table-sorting script are inline and the
plots are data: URIs, so the page opens offline and makes no request of its own.
"""

from __future__ import annotations

import base64
import html

from .document import Bullets, Cards, Code, Document, Facts, Figure, Para, Table

STYLE = """
:root { --ink:#1d2733; --muted:#5b6b7c; --line:#dde3ea; --bg:#f6f8fa; --accent:#3b6ea8;
        --ok:#1e7d4f; --bad:#b03a2e; --warn:#8a6d1c; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
       color:var(--ink); background:#fff; }
header { background:var(--ink); color:#fff; padding:22px 32px 18px; }
header h1 { margin:0 0 4px; font-size:24px; font-weight:600; }
header p { margin:0; color:#c5d0db; font-size:14px; overflow-wrap:anywhere; }
nav { padding:8px 32px; border-bottom:1px solid var(--line); background:var(--bg); font-size:14px;
      display:flex; flex-wrap:wrap; gap:4px 16px; }
nav a { color:var(--accent); text-decoration:none; white-space:nowrap; }
main { max-width:1240px; margin:0 auto; padding:8px 32px 48px; }
section { margin-top:28px; }
h2 { font-size:20px; border-bottom:2px solid var(--line); padding-bottom:4px; margin:0 0 14px; }
h3 { font-size:16px; margin:0 0 6px; }
.partial { margin:18px 0 0; padding:10px 14px; background:#fff7e0; border-left:4px solid var(--warn); }
.cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(160px,1fr)); gap:12px; margin-bottom:14px; }
.card { border:1px solid var(--line); border-radius:8px; padding:10px 14px; background:var(--bg); min-width:0; }
.card .label { font-size:12px; text-transform:uppercase; letter-spacing:.04em; color:var(--muted); }
.card .value { font-size:26px; font-weight:650; line-height:1.2; overflow-wrap:anywhere; }
.card .detail { font-size:13px; color:var(--muted); overflow-wrap:anywhere; }
pre { background:#0f1720; color:#e6edf3; padding:12px 16px; border-radius:6px; overflow-x:auto; font-size:13px;
      line-height:1.45; }
code { font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace; }
.figures { display:flex; flex-direction:column; gap:20px; }
/* The plot at its drawn size (never enlarged: the text would blur and grow), its caption beside
   it on a wide screen and below it on a narrow one. */
figure { margin:0; border:1px solid var(--line); border-radius:8px; padding:12px; min-width:0;
         display:flex; flex-wrap:wrap; gap:8px 20px; align-items:flex-start; }
figure h3 { flex:1 0 100%; }
figure .plot { flex:0 1 800px; min-width:0; }
figure img { width:100%; max-width:800px; height:auto; display:block; }
figcaption { flex:1 1 240px; font-size:14px; color:var(--muted); }
.missing { color:var(--muted); font-style:italic; }
table { border-collapse:collapse; font-size:13px; }
table.sortable { width:100%; }
th, td { border-bottom:1px solid var(--line); padding:5px 7px; text-align:left; vertical-align:top; }
th { vertical-align:bottom; }
th { background:var(--bg); position:sticky; top:0; }
table.facts th { background:none; position:static; color:var(--muted); font-weight:500; white-space:nowrap; }
.scroll { overflow-x:auto; max-width:100%; }
td.num { text-align:right; white-space:nowrap; font-variant-numeric:tabular-nums; }
td.ok { color:var(--ok); font-weight:600; } td.failed { color:var(--bad); font-weight:600; }
td.pruned { color:var(--warn); font-weight:600; }
tbody.chosen td { background:#eef5ff; }
tr.note td { border-top:none; padding-top:0; color:var(--muted); font-size:12.5px; }
tbody > tr:first-child:not(:last-child) td { border-bottom:none; }
th.sortable { cursor:pointer; }
th.sortable::after { content:"\\a0\\2195"; color:#9aa7b4; }  /* a no-break space keeps the arrow on the word */
th.asc::after { content:"\\a0\\2191"; color:var(--ink); } th.desc::after { content:"\\a0\\2193"; color:var(--ink); }
ul { padding-left:22px; } li { margin:4px 0; }
"""

# Sorts a table by the clicked column: numbers by data-sort, the rest as text; empty cells last.
# Each data row is its own <tbody> (with its note row, if any), so sorting moves them together.
SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.classList.add("sortable");
    th.addEventListener("click", function () {
      var asc = !th.classList.contains("asc");
      table.querySelectorAll("th").forEach(function (h) { h.classList.remove("asc", "desc"); });
      th.classList.add(asc ? "asc" : "desc");
      var rows = Array.prototype.slice.call(table.tBodies);  // one tbody per row and its note
      function key(group) {
        var cell = group.rows[0].cells[col], raw = cell.getAttribute("data-sort");
        if (raw === null) raw = cell.textContent;
        var n = parseFloat(raw);
        return raw === "" ? null : (isNaN(n) ? raw.toLowerCase() : n);
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null) return 1; if (y === null) return -1;
        if (typeof x !== typeof y) { x = String(x); y = String(y); }
        return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
      });
      rows.forEach(function (group) { table.appendChild(group); });
    });
  });
});
"""

e = html.escape


def _cards(block: Cards) -> str:
    items = "".join(f'<div class="card"><div class="label">{e(c.label)}</div><div class="value">{e(c.value)}</div>'
                    f'<div class="detail">{e(c.detail)}</div></div>' for c in block.cards)
    return f'<div class="cards">{items}</div>'


def _facts(block: Facts) -> str:
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in block.rows)
    return f'<table class="facts">{rows}</table>'


def _table(block: Table) -> str:
    head = "".join(f"<th>{e(c)}</th>" for c in block.columns)
    groups = []
    for i, row in enumerate(block.rows):
        cells = []
        for cell in row:
            sort = "" if cell.sort is None else f' data-sort="{e(str(cell.sort))}"'
            if cell.sort is None and cell.kind == "num":
                sort = ' data-sort=""'
            cells.append(f'<td class="{cell.kind}"{sort}>{e(cell.text)}</td>')
        chosen = ' class="chosen" title="the recommended configuration"' if i in block.highlight else ""
        rows = f"<tr>{''.join(cells)}</tr>"
        note = block.row_notes[i] if block.row_notes else ""
        if note:
            rows += f'<tr class="note"><td colspan="{len(row)}">{e(note)}</td></tr>'
        groups.append(f"<tbody{chosen}>{rows}</tbody>")  # one tbody per row: sorting moves a row with its note
    cls = ' class="sortable"' if block.sortable else ""
    return f'<div class="scroll"><table{cls}><thead><tr>{head}</tr></thead>{"".join(groups)}</table></div>'


def _figure(block: Figure) -> str:
    plot = block.plot
    if plot.png:
        data = base64.b64encode(plot.png).decode("ascii")
        body = f'<div class="plot"><img alt="{e(plot.title)}" src="data:image/png;base64,{data}"></div>'
    else:
        body = f'<p class="missing">Not shown: {e(plot.missing or "")}.</p>'
    return f"<figure><h3>{e(plot.title)}</h3>{body}<figcaption>{e(plot.caption)}</figcaption></figure>"


def _blocks(blocks) -> str:
    out, figures = [], []
    for block in blocks:
        if isinstance(block, Figure):
            figures.append(_figure(block))
            continue
        if figures:  # consecutive figures share a responsive grid
            out.append(f'<div class="figures">{"".join(figures)}</div>')
            figures = []
        if isinstance(block, Cards):
            out.append(_cards(block))
        elif isinstance(block, Para):
            out.append(f"<p>{e(block.text)}</p>")
        elif isinstance(block, Bullets):
            out.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Facts):
            out.append(_facts(block))
        elif isinstance(block, Table):
            out.append(_table(block))
        elif isinstance(block, Code):
            out.append(f'<pre><code class="language-{e(block.language)}">{e(block.text)}</code></pre>')
    if figures:
        out.append(f'<div class="figures">{"".join(figures)}</div>')
    return "\n".join(out)


def render(doc: Document) -> str:
    nav = "".join(f'<a href="#{e(s.id)}">{e(s.title)}</a>' for s in doc.sections)
    partial = ""
    if doc.partial:
        partial = ('<div class="partial"><strong>Partial report.</strong><ul>'
                   + "".join(f"<li>{e(m)}</li>" for m in doc.partial) + "</ul></div>")
    sections = "\n".join(f'<section id="{e(s.id)}"><h2>{e(s.title)}</h2>\n{_blocks(s.blocks)}</section>'
                         for s in doc.sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(doc.title)}</title>
<style>{STYLE}</style>
</head>
<body>
<header><h1>{e(doc.title)}</h1><p>{e(doc.subtitle)}</p></header>
<nav>{nav}</nav>
<main>
{partial}
{sections}
</main>
<script>{SCRIPT}</script>
</body>
</html>
"""
