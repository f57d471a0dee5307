"""Processes a test or a drill started, found by a mark in their environment (they inherit it,
the user's helpers included), so that "nothing is left behind" can be checked."""

from __future__ import annotations

import time
from pathlib import Path

MARK_ENV = "AMP_ADVISOR_HOSTILE_MARK"


def marked(mark: str) -> list[int]:
    """Live processes (zombies excluded) carrying `mark` in their environment."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"{MARK_ENV}={mark}".encode() in (entry / "environ").read_bytes().split(b"\0") and \
                        (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def wait_until_none_marked(mark: str, within_s: float = 30.0) -> list[int]:
    """The marked processes still alive after waiting up to `within_s` for them to go."""
    deadline = time.monotonic() + within_s
    while marked(mark) and time.monotonic() < deadline:
        time.sleep(0.2)
    return marked(mark)
