"""Errors users can act on. The CLI prints their message and exits non-zero."""


class RecsysError(ValueError):
    """Bad input or parameters: the message names the file, column, row or parameter."""


class DataValidationError(RecsysError):
    """A MovieLens source that is missing, malformed, or breaks the data rules."""


def parse_bool(name: str, value) -> bool:
    """``true/false``, ``1/0``, ``yes/no`` (any case) or a bool; anything else names ``name``."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise RecsysError(f"{name}={value!r} must be true or false")
