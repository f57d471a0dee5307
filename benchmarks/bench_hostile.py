"""Issue 11's corpus check, as a table: mutated recommendation.json, trials.jsonl and run.json
documents (Hypothesis mutates a real run's files: fields deleted, replaced by any JSON value,
by hostile text that would run if pasted into code unquoted) through `show` in every format,
`Recommendation.load` and `report`. Counted: exit codes, internal errors, tracebacks, and the
payload outside a string or comment in printed code (a line that would run).

    python benchmarks/bench_hostile.py [--documents 200]
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from amp_advisor.errors import AdvisorError  # noqa: E402
from amp_advisor.recommendation import Recommendation  # noqa: E402
from amp_advisor.snippets import FORMATS  # noqa: E402
from tests.hostile_docs import Outcome, finished_run, invoke, mutated  # noqa: E402


def corpus(documents: int, strategy, check) -> None:
    """Run `check` on `documents` examples of `strategy` (no shrinking: every example counts once)."""
    @settings(max_examples=documents, deadline=None, suppress_health_check=list(HealthCheck), database=None,
              phases=[Phase.generate])
    @given(strategy)
    def run(example):
        check(example)

    run()


def load(path: Path) -> Outcome:
    """The Python API: a bad document is an AdvisorError (one line), anything else escaped."""
    try:
        Recommendation.load(path)
        return Outcome(0, False, False, (), "")
    except AdvisorError as exc:
        return Outcome(2, False, "Traceback" in str(exc), (), str(exc))
    except Exception as exc:  # noqa: BLE001 - what the check counts
        return Outcome(1, True, False, (), f"{type(exc).__name__}: {exc}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=200, help="mutated documents per row")
    args = parser.parse_args()
    tallies: dict[str, collections.Counter] = {}
    examples: dict[str, str] = {}

    def count(row: str, outcome: Outcome) -> None:
        tally = tallies.setdefault(row, collections.Counter())
        tally["documents"] += 1
        tally[f"exit {outcome.exit_code}"] += 1
        tally["internal"] += outcome.internal_error
        tally["traceback"] += outcome.traceback
        tally["executed"] += bool(outcome.executed)
        if not outcome.clean and row not in examples:
            examples[row] = f"{outcome.stderr.strip()[:200]} {outcome.executed[:2]}"

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "run"
        started = time.monotonic()
        finished_run(base)
        print(f"# the run to mutate: {time.monotonic() - started:.0f} s", flush=True)
        rec = json.loads((base / "recommendation.json").read_text())
        lines = (base / "trials.jsonl").read_text().splitlines()
        trial, run_doc = json.loads(lines[0]), json.loads((base / "run.json").read_text())
        where = Path(tmp) / "recommendation.json"
        target = Path(tmp) / "mutated-run"

        def show(pair) -> None:
            doc, fmt = pair
            where.write_text(json.dumps(doc))
            count("recommendation.json -> show", invoke("show", str(where), "--format", fmt, code_format=fmt))

        def api(doc) -> None:
            where.write_text(json.dumps(doc))
            count("recommendation.json -> Recommendation.load", load(where))

        def report(name: str, text: str) -> None:
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(base, target)
            (target / name).write_text(text)
            count(f"{name} -> report", invoke("report", str(target)))

        for row, strategy, check in [
            ("show", st.tuples(mutated(rec), st.sampled_from(list(FORMATS))), show),
            ("load", mutated(rec), api),
            ("report rec", mutated(rec), lambda d: report("recommendation.json", json.dumps(d))),
            ("report trials", mutated(trial),
             lambda d: report("trials.jsonl", "\n".join([json.dumps(d)] + lines[1:]) + "\n")),
            ("report run", mutated(run_doc), lambda d: report("run.json", json.dumps(d))),
        ]:
            started = time.monotonic()
            corpus(args.documents, strategy, check)
            print(f"# {row}: {time.monotonic() - started:.0f} s", flush=True)

    print(f"\n{'documents through':44s} {'n':>5} {'exit 0':>7} {'exit 2':>7} {'other':>6} {'internal':>9} "
          f"{'traceback':>10} {'executed':>9}")
    total = collections.Counter()
    for row, tally in tallies.items():
        other = tally["documents"] - tally["exit 0"] - tally["exit 2"]
        print(f"{row:44s} {tally['documents']:5d} {tally['exit 0']:7d} {tally['exit 2']:7d} {other:6d} "
              f"{tally['internal']:9d} {tally['traceback']:10d} {tally['executed']:9d}")
        total.update(tally)
    print(f"{'all':44s} {total['documents']:5d} {total['exit 0']:7d} {total['exit 2']:7d} "
          f"{total['documents'] - total['exit 0'] - total['exit 2']:6d} {total['internal']:9d} "
          f"{total['traceback']:10d} {total['executed']:9d}")
    for row, text in examples.items():
        print(f"first failure, {row}: {text}")
    bad = total["internal"] + total["traceback"] + total["executed"]
    print(f"\ntarget: 0 internal errors, 0 tracebacks, 0 executed lines: {'met' if not bad else 'MISSED'}")


if __name__ == "__main__":
    main()
