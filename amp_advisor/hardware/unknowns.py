"""Read a value or record why it could not be read: the probe never crashes on one field."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if type(exc).__name__ in text else f"{type(exc).__name__}: {text}"


class Unknowns:
    """Collects, per field, the reason a value is missing."""

    def __init__(self) -> None:
        self.reasons: dict[str, str] = {}

    def read(self, field: str, fn: Callable[[], T]) -> T | None:
        try:
            value = fn()
        except Exception as exc:  # any failure of one probe is data, not a crash
            self.reasons[field] = describe(exc)
            return None
        if value is None and field not in self.reasons:
            self.reasons[field] = "not reported"
        return value

    def mark(self, field: str, reason: str) -> None:
        self.reasons.setdefault(field, reason)
