"""JSON as amp-advisor writes it: strict (inf/nan become null); files written atomically."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


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


def write_text_atomic(path: Path, text: str) -> Path:
    """Write to a temporary file beside `path`, fsync, rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; the result should read like any new file
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
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
