"""How a workload is given: a model.py path, a built-in example, a `module:attr` import string,
or a Hugging Face architecture by name (or from a local config).

One text, the `ref`, carries it everywhere: to the worker (which alone imports or builds it), into
run.json (`settings.workload`, so that --resume, `report` and `show` work for every kind) and into
the recommendation. A file or an example is its absolute path (as runs have always saved it); a
module or a Hugging Face model is a JSON object. Parsing a ref never imports anything.

`shown()` is the workload as the user gave it: `example transformer`, `mypkg.workloads:gpt`,
`--hf gpt2 --hf-layers 4`, or a file's path relative to the run directory.
"""

from __future__ import annotations

import ast
import json
import os
import re
from dataclasses import dataclass, field
from enum import Enum
from importlib import resources
from pathlib import Path

from .errors import BadInputError
from .hf import HfSpec
from .jsonio import read_document

# uvicorn/gunicorn's convention: dotted module, a colon, a dotted attribute
IMPORT_STRING = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
EXAMPLES_PACKAGE = ("amp_advisor", "examples")  # a file there is a built-in example


class WorkloadError(BadInputError):
    """The workload file breaks the contract. The message names the file and the fix."""


def example_names() -> list[str]:
    folder = resources.files("amp_advisor.examples")
    return sorted(p.name[:-3] for p in folder.iterdir() if p.name.endswith(".py") and not p.name.startswith("_"))


def example_path(name: str) -> Path:
    if name not in example_names():
        raise BadInputError(f"unknown example {name!r}: expected one of {', '.join(example_names())}")
    return Path(str(resources.files("amp_advisor.examples").joinpath(f"{name}.py")))


SOURCE_EXPECTED = "a model.py defining build_model and make_batch"
MAX_SOURCE_BYTES = 16 * 2**20  # a model file is kilobytes; a bigger one is not a model.py


def check_source(path: str | Path) -> Path:
    """Fail fast, without executing anything: the file exists, is Python, and parses."""
    path = Path(path)
    try:
        text = read_document(path, expected=SOURCE_EXPECTED, limit=MAX_SOURCE_BYTES)
    except BadInputError as exc:
        raise WorkloadError(str(exc)) from None
    try:
        ast.parse(text, filename=str(path))
    except SyntaxError as exc:
        raise WorkloadError(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from None
    except (RecursionError, MemoryError):
        raise WorkloadError(f"{path}: nested too deeply for Python to parse; expected {SOURCE_EXPECTED}") from None
    return path.resolve()


class Kind(str, Enum):
    FILE = "file"
    EXAMPLE = "example"
    MODULE = "module"
    HF = "hf"


@dataclass(frozen=True)
class WorkloadSource:
    kind: Kind
    target: str = ""  # FILE/EXAMPLE: the absolute path; MODULE: "pkg.mod:attr"; HF: unused (see hf)
    search_path: str = ""  # MODULE: the directory it is imported from (the caller's working directory)
    hf: HfSpec | None = field(default=None)  # HF: what to build

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def given(cls, model: str | os.PathLike | WorkloadSource | None = None, example: str | None = None,
              hf: HfSpec | None = None) -> WorkloadSource:
        """What the command line or the library got -> a checked source. Only a file is read (parsed,
        never run); a module is imported, and a Hugging Face model built, in the worker."""
        if isinstance(model, WorkloadSource) and example is None and hf is None:
            return model
        given = [x for x in (model, example, hf) if x is not None]
        if len(given) != 1:
            raise BadInputError("give one workload (exactly one of them): a model.py path, a module:attr import "
                                "string, --example NAME, or --hf ARCH / --hf-config PATH")
        if example is not None:
            return cls(Kind.EXAMPLE, str(check_source(example_path(example))))
        if hf is not None:
            return cls(Kind.HF, hf=hf.checked())
        text = os.fspath(model)  # type: ignore[arg-type]
        if IMPORT_STRING.match(text) and not Path(text).exists():
            return cls(Kind.MODULE, text, search_path=os.getcwd())
        path = check_source(Path(text))
        return cls(Kind.EXAMPLE if _in_examples(path) else Kind.FILE, str(path))

    # -- the ref: the one text that travels -----------------------------------------------------

    @property
    def ref(self) -> str:
        if self.kind in (Kind.FILE, Kind.EXAMPLE):
            return self.target
        if self.kind is Kind.MODULE:
            return json.dumps({"kind": self.kind.value, "target": self.target, "search_path": self.search_path},
                              sort_keys=True)
        assert self.hf is not None
        return json.dumps({"kind": self.kind.value, "hf": self.hf.to_dict()}, sort_keys=True)

    @classmethod
    def from_ref(cls, ref: str) -> WorkloadSource:
        if not ref.startswith("{"):
            return cls(Kind.EXAMPLE if _in_examples(Path(ref)) else Kind.FILE, ref)
        try:
            data = json.loads(ref)
            kind = Kind(data["kind"])
            if kind is Kind.MODULE:
                return cls(kind, str(data["target"]), search_path=str(data.get("search_path", "")))
            if kind is Kind.HF:
                return cls(kind, hf=HfSpec.from_dict(data["hf"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise BadInputError(f"workload {ref[:80]!r}: not a workload this version reads ({exc})") from None
        raise BadInputError(f"workload {ref[:80]!r}: kind {kind.value} is not given by a ref")

    # -- what people read ------------------------------------------------------------------------

    @property
    def path(self) -> Path | None:
        """The file to import, when there is one (FILE, EXAMPLE)."""
        return Path(self.target) if self.kind in (Kind.FILE, Kind.EXAMPLE) else None

    @property
    def name(self) -> str:
        """Short, for directory names and headings: the file's stem, the example, the attribute,
        the model type."""
        if self.kind is Kind.MODULE:
            return self.target.rsplit(":", 1)[1].rsplit(".", 1)[-1]
        if self.kind is Kind.HF:
            assert self.hf is not None
            return f"hf-{self.hf.display_name()}"
        return Path(self.target).stem

    def shown(self, run_dir: str | os.PathLike | None = None) -> str:
        """As the user gave it; a file relative to `run_dir` when there is one (a report travels
        with its run directory, not with the machine's absolute paths)."""
        if self.kind is Kind.EXAMPLE:
            return f"example {self.name}"
        if self.kind is Kind.MODULE:
            return self.target
        if self.kind is Kind.HF:
            assert self.hf is not None
            return self.hf.shown()
        if run_dir is None:
            return self.target
        return os.path.relpath(self.target, Path(run_dir).resolve())

    @property
    def short(self) -> str:
        """For a heading: a file by its name, anything else as given."""
        return Path(self.target).name if self.kind is Kind.FILE else self.shown()

    @property
    def arguments(self) -> list[str]:
        """The command-line words that name this workload again (shlex.join them for a shell)."""
        if self.kind is Kind.EXAMPLE:
            return ["--example", self.name]
        if self.kind is Kind.HF:
            assert self.hf is not None
            return self.hf.words()
        return [self.target]

    def same_as(self, other: WorkloadSource) -> bool:
        """Whether two runs tuned the same workload (another checkout of the same example counts)."""
        if self.kind is Kind.EXAMPLE and other.kind is Kind.EXAMPLE:
            return self.name == other.name
        return self.ref == other.ref


def _in_examples(path: Path) -> bool:
    return path.suffix == ".py" and tuple(path.parts[-3:-1]) == EXAMPLES_PACKAGE


def shown_ref(ref: str) -> str:
    """A saved ref as the user gave it (a file, module:attr, --hf): never its internal JSON."""
    source = readable(ref)
    return source.shown() if source is not None else ref


def readable(ref: str) -> WorkloadSource | None:
    """A saved ref, or None when this version cannot read it (shown as it is then)."""
    try:
        return WorkloadSource.from_ref(ref)
    except BadInputError:
        return None
