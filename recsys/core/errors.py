"""Errors users can act on. The CLI prints their message and exits non-zero."""


class RecsysError(ValueError):
    """Bad input or parameters: the message names the file, column, row or parameter."""


class DataValidationError(RecsysError):
    """A MovieLens source that is missing, malformed, or breaks the data rules."""
