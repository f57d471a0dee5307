"""Nothing amp-advisor or the user's code started outlives it: the process tree, found and killed.

Linux gives the tools, and each level uses them:
- the trial worker is a child subreaper (PR_SET_CHILD_SUBREAPER): a process the user's code
  started and then lost its parent (a double fork, a daemon) is re-parented to the worker, not to
  init, so it stays in the worker's tree, and a new session (start_new_session) does not hide it;
- the worker and every rank ask for a signal when their parent dies (PR_SET_PDEATHSIG, SIGTERM:
  catchable, so they kill their own tree first), and a thread watches for being re-parented, for
  when the main thread is busy in a long C call;
- whoever kills a worker kills its whole tree, found in /proc, and then its process group.
No torch here, and nothing that allocates much: this runs while a process is being torn down.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def become_subreaper() -> bool:
    """Orphaned descendants of this process are re-parented to it (Linux); whether it took."""
    return _prctl(PR_SET_CHILD_SUBREAPER, 1)


def signal_on_parent_death(sig: int = signal.SIGTERM) -> bool:
    """The kernel sends `sig` to this process when its parent dies (Linux); whether it took."""
    return _prctl(PR_SET_PDEATHSIG, int(sig))


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid`, children before grandchildren, from /proc (empty where
    there is no /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # it ended while we looked
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, frontier = [], [pid]
    while frontier:
        frontier = [c for p in frontier for c in children.get(p, ())]
        out += frontier
    return out


def kill_tree(pid: int, *, include_self: bool = True) -> None:
    """SIGKILL every descendant of `pid`, then `pid`'s process group (when `pid` leads one) and
    `pid` itself. Children are stopped first, so that none forks a replacement while we look."""
    for child in descendants(pid):
        try:
            os.kill(child, signal.SIGSTOP)
        except OSError:
            pass
    for child in descendants(pid):
        try:
            os.kill(child, signal.SIGKILL)
        except OSError:
            pass
    if not include_self:
        return
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
