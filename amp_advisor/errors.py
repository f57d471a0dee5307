"""The project's exceptions.

The library raises these; only the CLI turns them into a one-line message and an exit code.
"""


class AdvisorError(Exception):
    """Base class for every error amp-advisor raises on purpose."""


class BadInputError(AdvisorError):
    """The user asked for something that cannot be done as asked.

    The message says what was received, what was expected, and how to fix it.
    The CLI prints it on one line and exits with code 2.
    """
