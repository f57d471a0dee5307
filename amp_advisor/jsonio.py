"""JSON as amp-advisor writes it: strict (inf/nan become null); files written atomically."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import math
import os
import stat
import tempfile
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

from .errors import BadInputError

# A marker for typing.Annotated[float, NULL_IS_NAN]: a value that may legitimately be inf/nan (a
# diverged loss). strict() writes it as null; check_fields accepts that null, and the reader
# turns it back into nan (nan_for_null).
NULL_IS_NAN = "null-is-nan"
MaybeFinite = Annotated[float, NULL_IS_NAN]  # a float saved as null when inf/nan (strict JSON)


def nan_for_null(values: Any) -> tuple[float, ...]:
    return tuple(math.nan if v is None else float(v) for v in values)


def strict(value: Any) -> Any:
    """inf/nan (a diverged loss) become null, so the output is JSON any parser accepts."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    return value


def dumps(data: Any, indent: int | None = 2) -> str:
    return json.dumps(strict(data), indent=indent, allow_nan=False)


def write_atomic(path: Path, data: Any) -> Path:
    """JSON to `path`, atomically."""
    return write_text_atomic(path, dumps(data) + "\n")


def write_text_atomic(path: Path, text: str | bytes) -> Path:
    """Write to a temporary file beside `path`, fsync, rename: a reader never sees half a file
    (text as UTF-8, bytes as they are)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; the result should read like any new file
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8") if isinstance(text, str) else text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ------------------------------------------------------------------ strict reading of saved state
MAX_DOCUMENT_BYTES = 16 * 2**20  # a recommendation or run file is kilobytes; a trials line as much


MAX_DEPTH = 32  # the deepest document amp-advisor writes or reads is 6 levels


def read_document(path: Path, origin: str | None = None, *, expected: str = "a file amp-advisor wrote",
                  limit: int = MAX_DOCUMENT_BYTES) -> str:
    """The text of a file the tool reads (saved state, a config, a user's source), read
    defensively: a regular file (not a FIFO, a device or a directory), at most `limit` bytes,
    checked before reading, and UTF-8. Every failure is one BadInputError that starts with
    `origin` (default: the path) and says what was `expected`."""
    origin = origin or str(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise BadInputError(f"{origin}: no such file (expected {expected})") from None
    except OSError as exc:
        raise BadInputError(f"{origin}: cannot open it ({exc.strerror or exc}); expected {expected}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise BadInputError(f"{origin}: a directory, expected {expected}")
        if not stat.S_ISREG(st.st_mode):
            raise BadInputError(f"{origin}: not a regular file (a device, pipe or socket), expected {expected}")
        if st.st_size > limit:
            raise BadInputError(f"{origin}: {st.st_size} bytes, over the {limit}-byte limit for {expected}")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise BadInputError(f"{origin}: cannot read it ({exc.strerror or exc}); expected {expected}") from None
    finally:
        os.close(fd)
    if len(data) > limit:  # it grew while we read it
        raise BadInputError(f"{origin}: over the {limit}-byte limit for {expected}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{origin}: not UTF-8 text (byte {exc.start}); expected {expected}") from None


def check_depth(value: Any, origin: str, limit: int = MAX_DEPTH) -> Any:
    """`value` (parsed JSON or TOML), if no list or object in it is nested deeper than `limit`;
    iterative, so a deep document cannot exhaust the stack of whatever reads it next."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                raise BadInputError(f"{origin}: nested more than {limit} levels deep, deeper than any file "
                                    "amp-advisor reads")
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return value


def loads(text: str, origin: str) -> Any:
    """JSON from a file we wrote, read defensively: bounded size and nesting."""
    if len(text) > MAX_DOCUMENT_BYTES:
        raise BadInputError(f"{origin}: {len(text)} bytes, larger than any file amp-advisor writes")
    try:
        data = json.loads(text)  # a JSONDecodeError (a ValueError) is the caller's to word
    except RecursionError:
        raise BadInputError(f"{origin}: nested too deeply to be a file amp-advisor wrote") from None
    return check_depth(data, origin)


def read_json(path: Path, origin: str | None = None, *, expected: str = "a file amp-advisor wrote",
              limit: int = MAX_DOCUMENT_BYTES) -> Any:
    """read_document, parsed as JSON: a file that is not JSON is one BadInputError too."""
    origin = origin or str(path)
    try:
        return loads(read_document(path, origin, expected=expected, limit=limit), origin)
    except ValueError as exc:
        raise BadInputError(f"{origin}: not valid JSON ({exc}); expected {expected}") from None


def check_fields(cls: type, data: Any, where: str, *, finite: bool = False) -> None:
    """Check `data` (parsed JSON) against the type hints of dataclass `cls`, recursively: bool is
    not an int, an int is not a float written as 8.5, a str is not a number, a nested dataclass is
    an object. `finite`: floats must be finite. Raises ValueError naming the field."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        if f.name in data:
            _check(data[f.name], hints[f.name], f"{where}.{f.name}", finite)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"{where}.{f.name}: missing")


def _check(value: Any, hint: Any, where: str, finite: bool) -> None:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return
    if origin is typing.Annotated:
        if value is None and NULL_IS_NAN in args[1:]:
            return  # a non-finite value, as strict() wrote it
        return _check(value, args[0], where, finite)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        problems = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check(value, arg, where, finite)
            except ValueError as exc:
                problems.append(str(exc))
        raise ValueError(problems[0] if problems else f"{where}: unexpected null")
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and finite and not math.isfinite(value):
            raise ValueError(f"{where}: {value!r} is not a finite number")
    elif hint is str:
        ok = isinstance(value, str)
    elif isinstance(hint, type) and issubclass(hint, enum.Enum):
        ok = isinstance(value, (str, int, float)) and not isinstance(value, bool) and value in {m.value for m in hint}
    elif isinstance(hint, type) and dataclasses.is_dataclass(hint):
        check_fields(hint, value, where, finite=finite)
        return
    elif origin in (tuple, list, Sequence) or hint in (tuple, list):
        if not isinstance(value, (list, tuple)):  # a list in JSON; a tuple from to_dict() in memory
            raise ValueError(f"{where}: expected a list, got {type(value).__name__}")
        item = args[0] if args else Any
        for i, v in enumerate(value):
            _check(v, item, f"{where}[{i}]", finite)
        return
    elif origin in (dict, Mapping) or hint in (dict, Mapping):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object, got {type(value).__name__}")
        for k, v in value.items() if len(args) == 2 else ():
            _check(v, args[1], f"{where}[{k!r:.20}]", finite)  # keys are JSON strings: the reader converts them
        return
    else:
        return  # a type this checker does not know: the constructor decides
    if not ok:
        raise ValueError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r:.40}")
