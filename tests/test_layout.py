"""The layout's bars (DESIGN.md, the issue "One home for every tuning lever"), read from the source:
no function over MAX_FUNCTION_LINES lines, the tuner's module under MAX_TUNER_LINES."""

import ast
from pathlib import Path

import amp_advisor

PACKAGE = Path(amp_advisor.__file__).parent
MAX_FUNCTION_LINES = 60
MAX_TUNER_LINES = 250


def _functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_no_function_of_the_package_is_longer_than_the_bar():
    long = [f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in sorted(PACKAGE.rglob("*.py")) for node in _functions(path)
            if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []


def test_the_tuner_is_a_short_loop_over_its_phases():
    assert len((PACKAGE / "tuning" / "tuner.py").read_text().splitlines()) < MAX_TUNER_LINES


def test_the_check_sees_a_long_function():
    """The walk counts a function's lines from its def to its last line (so the bar can fail)."""
    source = "def f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES
    (node,) = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef)]
    assert node.end_lineno - node.lineno + 1 == MAX_FUNCTION_LINES + 1
