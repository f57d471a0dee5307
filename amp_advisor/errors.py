"""The project's exceptions.

The library raises these; only the CLI turns them into a one-line message and an exit code.
"""

import os


class AdvisorError(Exception):
    """Base class for every error amp-advisor raises on purpose."""


class BadInputError(AdvisorError):
    """The user asked for something that cannot be done as asked.

    The message says what was received, what was expected, and how to fix it.
    The CLI prints it on one line and exits with code 2.
    """


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM ended the work. `signum` gives the exit code (128 + signum: 130 for
    Ctrl-C, 143 for SIGTERM); `run_dir` is the run directory left consistent for --resume, None
    when the run had not written one yet."""

    def __init__(self, signum: int, run_dir: "os.PathLike[str] | str | None" = None,
                 unmarked: str | None = None) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum
        self.run_dir = run_dir
        self.unmarked = unmarked  # why run.json could not be marked interrupted (a full disk), if it could not

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def raise_interrupted(signum: int, frame: object) -> None:
    """A signal handler: the signal ends the work as Ctrl-C does, through the same cleanup."""
    raise Interrupted(signum)
