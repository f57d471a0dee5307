"""A run directory: run.json (settings, state and what the report needs to know about the run),
device.json (the probe's view of the device tuned on), trials.jsonl (append-only, one trial per
line, flushed to disk before the next trial starts), recommendation.json and trials.csv.

Resumable: a run that was interrupted is continued from what trials.jsonl holds. Nothing here
unpickles or executes anything: JSON only.

Exclusive: a run holds an OS file lock on `.lock` in its directory for as long as it lives
(`RunStore.lock`), taken before anything else is written there. The kernel releases it when the
process dies, however it dies, so a killed run never leaves a stale lock behind; a second `tune`
or `--resume` on a locked directory is refused, naming the process that holds it.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..diagnosis import Diagnosis
from ..dtypes import Dtype
from ..errors import AdvisorError, BadInputError
from ..hardware.model import DeviceProfile
from ..jsonio import (
    MAX_DOCUMENT_BYTES,
    check_fields,
    dumps,
    loads,
    read_document,
    read_json,
    write_atomic,
    write_text_atomic,
)
from .record import Role, TrialRecord
from .settings import TuneSettings
from .space import SearchSpace

__all__ = ["RunStore", "TrialRecord", "Role", "RUN_SCHEMA_VERSION"]

RUN_SCHEMA_VERSION = 1
RUN_EXPECTED = "a run.json written by `amp-advisor tune` (is this a run directory?)"
# a trial's line is kilobytes; --max-trials' limit of them, with their confirmation rounds, fits
TRIALS_FILE_BYTES = 16 * MAX_DOCUMENT_BYTES


@dataclass(frozen=True)
class RunContext:
    """run.json's "context": facts about the run that the report reads."""

    space: SearchSpace | None = None
    memory_limit_bytes: int | None = None
    memory_margin: float | None = None
    init_scale_seed: float | None = None


@dataclass(frozen=True)
class RunFile:
    """run.json, as checked on reading (the fields after `context` are written when a run ends)."""

    schema_version: int
    state: str
    settings: dict  # checked against TuneSettings on reading
    context: RunContext = RunContext()
    trials: int | None = None
    stopped_because: str | None = None
    wall_s: float | None = None
    notes: tuple[str, ...] = ()
    reason: str | None = None


class RunStore:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.run_file = directory / "run.json"
        self.trials_file = directory / "trials.jsonl"
        self.device_file = directory / "device.json"
        self.lock_file = directory / ".lock"
        self._lock_fd: int | None = None

    def lock(self) -> None:
        """Take the directory for this process (creating it if needed), or refuse: one line naming
        the process that holds it. Released by unlock(), or by the kernel when the process ends."""
        if self._lock_fd is not None:
            return
        try:
            import fcntl
        except ModuleNotFoundError:  # not a POSIX system: no exclusion (documented in the README)
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM) and self.exists:
                return  # a run on a read-only disk: nobody can write it, so there is nothing to exclude
            raise BadInputError(f"{self.dir}: cannot use it as a run directory ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "another process"
            os.close(fd)
            raise BadInputError(f"{self.dir} is in use by a running amp-advisor (pid {holder}): wait for it to "
                                "finish, or give this run another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def discard(self, created: bool) -> None:
        """Undo lock() before anything else was written: the lock file, and the directory if
        lock() created it and nothing else is in it."""
        self.unlock()
        try:
            self.lock_file.unlink(missing_ok=True)
            if created:
                self.dir.rmdir()  # only if empty
        except OSError:
            pass

    def unlock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the lock

    @property
    def exists(self) -> bool:
        return self.run_file.exists()

    def create(self, settings: dict[str, Any]) -> None:
        if self.run_file.exists() or (self.trials_file.exists() and self.trials_file.stat().st_size):
            raise BadInputError(f"{self.dir} already holds a run: pass --resume to continue it, or another --out")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.write_state("running", settings)

    def run_info(self) -> dict[str, Any]:
        """run.json as written: schema_version, state, settings, context, and the end-of-run fields."""
        data = read_json(self.run_file, expected=RUN_EXPECTED)
        if not isinstance(data, dict) or data.get("schema_version") != RUN_SCHEMA_VERSION:
            version = data.get("schema_version") if isinstance(data, dict) else None
            raise BadInputError(f"{self.run_file}: schema_version {version!r:.40}, expected {RUN_SCHEMA_VERSION}")
        try:
            check_fields(RunFile, data, "run")
            check_fields(TuneSettings, data["settings"], "run.settings")
        except ValueError as exc:
            raise BadInputError(f"{self.run_file}: not a run file amp-advisor wrote ({exc})") from None
        return data

    def settings(self) -> dict[str, Any]:
        settings = self.run_info().get("settings")
        if not isinstance(settings, dict):
            raise BadInputError(f"{self.run_file}: no settings object: not a run directory amp-advisor wrote")
        return settings

    def write_state(self, state: str, settings: dict[str, Any] | None = None, **extra: Any) -> None:
        """Rewrite run.json with a new state; the context recorded so far is kept."""
        previous = self.run_info() if self.run_file.exists() else {}
        settings = settings if settings is not None else previous["settings"]
        write_atomic(self.run_file, {"schema_version": RUN_SCHEMA_VERSION, "state": state, "settings": settings,
                                     "context": previous.get("context", {}), **extra})

    def record_context(self, **values: Any) -> None:
        """Facts about the run that outlive it (the search space, the memory limit): the report reads them."""
        data = self.run_info()
        data["context"] = {**data.get("context", {}), **values}
        write_atomic(self.run_file, data)

    def diagnosis_file(self, dtype: Dtype) -> Path:
        return self.dir / f"diagnosis-{dtype.value}.json"

    def write_diagnosis(self, diagnosis: Diagnosis) -> Path:
        """The X-ray of a dtype that failed on numerics: the report draws it."""
        return write_atomic(self.diagnosis_file(diagnosis.dtype), diagnosis.to_dict())

    def diagnoses(self) -> list[Diagnosis]:
        """The diagnoses the run saved, fp16's first; one that does not load is left out."""
        out = []
        for dtype in (Dtype.FP16, Dtype.BF16):
            path = self.diagnosis_file(dtype)
            try:
                out.append(Diagnosis.from_dict(read_json(path)))
            except (OSError, ValueError, TypeError, KeyError, RecursionError, AdvisorError):
                continue
        return out

    def write_device(self, device_profile) -> None:
        write_atomic(self.device_file, device_profile.to_dict())

    def device(self):
        """The DeviceProfile the run was tuned on, or None if the run did not record one."""
        if not self.device_file.exists():
            return None
        try:
            return DeviceProfile.from_dict(read_json(self.device_file))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BadInputError(f"{self.device_file}: cannot read the device profile ({exc})") from None

    def append(self, record: TrialRecord) -> None:
        line = dumps(record.to_dict(), indent=None) + "\n"
        with open(self.trials_file, "a", encoding="utf-8") as f:
            f.write(line)  # one write per line: an interruption cannot interleave two records
            f.flush()
            os.fsync(f.fileno())

    def records(self) -> Iterator[TrialRecord]:
        """Every trial so far. A torn last line (a hard kill mid-write: no newline ends it) is
        dropped from the file so that a resumed run appends after whole records; any other line
        that does not load, the last one included, is an error (a record of another version, an
        edited file): it is never deleted."""
        records, problems = self.read_records()
        for line_number, why, torn in problems:
            if not torn:
                raise BadInputError(f"{self.trials_file}:{line_number}: corrupt trial record ({why}); "
                                    "it is a whole line, not one torn by a kill, so it was left as it is")
        if problems:
            lines = self._trials_text().splitlines()
            self._truncate_last_line(lines[:-1])
        yield from records

    def read_records(self) -> tuple[list[TrialRecord], list[tuple[int, str, bool]]]:
        """Read-only: the records that parse, and (line number, why, torn) for those that do not.
        Torn: the last line, cut short by a kill mid-write (every record is written as one line
        and its newline in one write, so a line that ends with its newline is whole)."""
        if not self.trials_file.exists():
            return [], []
        text = self._trials_text()
        lines = text.splitlines()
        records, problems = [], []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                records.append(TrialRecord.from_dict(loads(line, f"{self.trials_file}:{i + 1}")))
            except (KeyError, TypeError, ValueError, AttributeError, BadInputError) as exc:
                problems.append((i + 1, str(exc), i == len(lines) - 1 and not text.endswith("\n")))
        return records, problems

    def _trials_text(self) -> str:
        return read_document(self.trials_file, expected="a trials.jsonl written by `amp-advisor tune`",
                             limit=TRIALS_FILE_BYTES)

    def _truncate_last_line(self, keep: list[str]) -> None:
        write_text_atomic(self.trials_file, "".join(line + "\n" for line in keep))

    def write_csv(self, records: list[TrialRecord]) -> Path:
        import pandas as pd

        rows = []
        for r in records:
            res = r.result
            rows.append({
                "trial": r.number, "role": r.role.value, "round": r.round, "dtype": r.candidate.dtype.value,
                "batch_size": r.candidate.batch_size, "grad_accum": res.spec.grad_accum,
                "init_scale": r.candidate.init_scale or None, "growth_interval": r.candidate.growth_interval or None,
                "status": res.status.value, "feasible": r.feasible, "why_not": r.why_not, "error": res.error,
                "samples_per_s": res.samples_per_s,
                "step_time_median_s": res.step_time_s.median if res.step_time_s else None,
                "step_time_iqr_s": res.step_time_s.iqr if res.step_time_s else None,
                "peak_memory_bytes": res.peak_memory_bytes, "tflops": res.tflops, "mfu": res.mfu,
                "skipped_steps": res.skipped_steps, "final_loss_scale": res.final_loss_scale,
                "loss_rel_diff_vs_fp32": res.loss_rel_diff_vs_fp32,
                "grad_underflow_fraction": res.grad_stats.underflow_fraction if res.grad_stats else None,
                "wall_s": res.wall_s, "tf32": res.tf32, "load_1m": r.load,
                **({"parallel": res.spec.parallel, "comm": r.candidate.comm, "ranks": len(res.ranks),
                    "failed_rank": res.failed_rank,
                    "slowest_rank_step_s": max((x.step_median_s for x in res.ranks if x.step_median_s), default=None),
                    "fastest_rank_step_s": min((x.step_median_s for x in res.ranks if x.step_median_s), default=None)}
                   if res.spec.parallel else {}),
            })
        return write_text_atomic(self.dir / "trials.csv", pd.DataFrame(rows).to_csv(index=False))
