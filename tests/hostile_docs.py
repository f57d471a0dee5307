"""Hostile documents, shared by tests/test_hostile.py (which asserts) and
benchmarks/bench_hostile.py (which counts): a payload that would run if pasted into code
unquoted, Hypothesis strategies that mutate saved documents, and one CLI call classified."""

from __future__ import annotations

import copy
import io
import tokenize
from dataclasses import dataclass

from click.testing import CliRunner
from hypothesis import strategies as st

from amp_advisor.cli import cli
from tests.fakes import WORKLOADS

PAYLOAD = '"); __import__("os").system("PWNED") #\n__import__("os").system("PWNED")\n\'\'\'"""'
MARK = "PWNED"
CODE_FORMATS = ("torch", "lightning", "accelerate", "hf-trainer")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=20) | st.just(PAYLOAD),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8) | st.just(PAYLOAD), inner,
                                                                max_size=3),
    max_leaves=8)


def _paths(doc, prefix=()):
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, prefix + (i,))
    return out


@st.composite
def mutated(draw, doc):
    """`doc` with 1-3 of its fields (at any depth) deleted or replaced by any JSON value."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
        if not isinstance(doc, dict):
            break
    return doc


def code_outside_literals(code: str) -> list[str]:
    """Tokens of Python `code` that carry the payload's mark outside a string or a comment: what
    would run if the code were pasted. Code that does not even tokenize counts as one."""
    try:
        return [t.string for t in tokenize.generate_tokens(io.StringIO(code).readline)
                if MARK in t.string and t.type not in (tokenize.STRING, tokenize.COMMENT)]
    except (tokenize.TokenError, SyntaxError) as exc:
        return [f"does not tokenize: {exc}"]


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    internal_error: bool  # an exception escaped, or the CLI said "internal error"
    traceback: bool
    executed: tuple[str, ...]  # payload tokens outside literals in printed code
    stderr: str

    @property
    def clean(self) -> bool:
        return self.exit_code in (0, 2) and not self.internal_error and not self.traceback and not self.executed


def invoke(*args: str, code_format: str | None = None) -> Outcome:
    """One CLI call in this process, classified. `code_format`: the output is Python code of that
    --format, checked for the payload outside literals."""
    result = CliRunner().invoke(cli, list(args))
    escaped = result.exception is not None and not isinstance(result.exception, SystemExit)
    text = result.output  # stdout and stderr, interleaved
    executed = ()
    if code_format in CODE_FORMATS and result.exit_code == 0:
        executed = tuple(code_outside_literals(result.stdout))
    why = f"{type(result.exception).__name__}: {result.exception}" if escaped else result.stderr
    return Outcome(result.exit_code, escaped or "internal error" in text, "Traceback" in text, executed, why)


def finished_run(path) -> None:
    """A small complete run at `path` (the tiny workload, a grid of 4): the documents to mutate."""
    result = CliRunner().invoke(cli, ["tune", str(WORKLOADS / "tiny.py"), "--device", "cpu", "--out", str(path),
                                      "--batch-sizes", "4,8", "--steps", "3", "--strategy", "grid"])
    if result.exit_code != 0:
        raise RuntimeError(f"the run to mutate failed: {result.output}")
