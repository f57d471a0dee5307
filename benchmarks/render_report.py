"""Render a run's report.html (or another page amp-advisor writes: `compare`'s) in a real headless
Chromium: a screenshot to look at, and a layout check that prints a table (page width vs
viewport, elements sticking out of the page, images that failed to decode, overlapping figures,
tables that need sideways scrolling). Exit code 1
when any is found (a table may scroll below 1200 px wide).

    python benchmarks/render_report.py reports/examples/cpu/transformer --out /tmp/shots
    python benchmarks/render_report.py reports/20261124-compare.html --out /tmp/shots

Needs Debian's chromium (`apt-get install chromium`); pass --chromium for another binary.
The page is loaded from a file:// URL with the network off: a page that needed the network
would show broken images, which the check counts.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Flags: headless as root in a container, and no background connections on a closed network.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--virtual-time-budget=5000"]

# Runs inside the page after layout; writes its findings into the DOM for --dump-dom to read.
PROBE = """
<script>
window.addEventListener("load", function () {
  var vw = document.documentElement.clientWidth, out = {viewport: vw,
      page_height: document.documentElement.scrollHeight,
      page_width: document.documentElement.scrollWidth, sticking_out: [], broken_images: 0, overlaps: 0,
      images: 0, scrolling_tables: 0};
  document.querySelectorAll(".scroll").forEach(function (box) {
    if (box.scrollWidth > box.clientWidth + 1) out.scrolling_tables += 1;
  });
  document.querySelectorAll("body *").forEach(function (el) {
    var box = el.closest(".scroll, pre"), inScroll = box && box !== el;
    var r = el.getBoundingClientRect();
    if (!inScroll && r.width > 0 && r.right > vw + 1) out.sticking_out.push(el.tagName + "." + el.className);
  });
  document.querySelectorAll("img").forEach(function (img) {
    out.images += 1; if (!img.complete || img.naturalWidth === 0) out.broken_images += 1;
  });
  var figs = Array.prototype.slice.call(document.querySelectorAll("figure, .card, pre, table"));
  for (var i = 0; i < figs.length; i++) for (var j = i + 1; j < figs.length; j++) {
    if (figs[i].contains(figs[j]) || figs[j].contains(figs[i])) continue;
    var a = figs[i].getBoundingClientRect(), b = figs[j].getBoundingClientRect();
    if (a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1) out.overlaps += 1;
  }
  // Sorting: click the samples/s header once (ascending) and read the column back.
  var table = document.querySelector("table.sortable");
  if (table) {
    var heads = Array.prototype.slice.call(table.querySelectorAll("th"));
    var col = heads.findIndex(function (th) { return th.textContent.trim().endsWith("samples/s"); });
    heads[col].click();
    out.sorted_column = Array.prototype.map.call(table.tBodies, function (b) {
      return b.rows[0].cells[col].getAttribute("data-sort"); });
  }
  var pre = document.createElement("pre"); pre.id = "layout-check"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


def sorts_ok(result: dict) -> bool:
    """After one click the samples/s column ascends, with unmeasured trials last."""
    values = result.get("sorted_column")
    if values is None:
        return False
    numbers = [float(v) for v in values if v]
    return numbers == sorted(numbers) and all(v for v in values[: len(numbers)])


def chromium(binary: str, *args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=120)


def check_layout(binary: str, page: Path, width: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        probed = Path(tmp) / "page.html"
        probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
        done = chromium(binary, f"--window-size={width},1000", "--dump-dom", probed.as_uri())
    found = re.search(r'<pre id="layout-check">(.*?)</pre>', done.stdout, re.S)
    if not found:
        raise SystemExit(f"chromium did not run the layout check (exit {done.returncode}): {done.stderr[-500:]}")
    return json.loads(found.group(1).replace("&quot;", '"'))


def screenshot(binary: str, page: Path, width: int, height: int, out: Path) -> None:
    done = chromium(binary, f"--window-size={width},{height}", f"--screenshot={out}", page.as_uri())
    if not out.exists():
        raise SystemExit(f"chromium wrote no screenshot (exit {done.returncode}): {done.stderr[-500:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a run directory (its report.html) or an HTML page")
    parser.add_argument("--out", type=Path, default=Path("/tmp/report-shots"))
    parser.add_argument("--widths", default="1280,820", help="viewport widths to check, comma-separated")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    page = (args.run_dir if args.run_dir.suffix == ".html" else args.run_dir / "report.html").resolve()
    if not page.exists():
        sys.exit(f"{page}: no report.html; run `amp-advisor report {args.run_dir}` first")
    if not Path(args.chromium).exists():
        sys.exit(f"{args.chromium}: no chromium; install Debian's package: apt-get install -y chromium")
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"{'width':>6} {'page width':>10} {'images':>6} {'broken':>6} {'overlaps':>8} {'scrolling tables':>16}"
          f" {'sort works':>10}  sticking out / screenshot")
    failed = False
    for width in (int(w) for w in args.widths.split(",")):
        result = check_layout(args.chromium, page, width)
        shot = args.out / f"{page.stem}-{width}.png"
        screenshot(args.chromium, page, width, result["page_height"], shot)  # the whole page
        sticking = ", ".join(sorted(set(result["sticking_out"]))[:6]) or "none"
        print(f"{width:>6} {result['page_width']:>10} {result['images']:>6} {result['broken_images']:>6} "
              f"{result['overlaps']:>8} {result['scrolling_tables']:>16} {str(sorts_ok(result)):>10}  "
              f"{sticking} / {shot}")
        # a table may scroll sideways on a narrow screen, never on a desktop-sized one
        failed |= bool(result["broken_images"] or result["overlaps"] or result["page_width"] > width
                       or result["sticking_out"] or (width >= 1200 and result["scrolling_tables"])
                       or not sorts_ok(result))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
