"""Parameters declared once: the shared validators and the :class:`Param` declaration.

A :class:`Param` holds a parameter's name, kind, default, range and help. The config dataclasses
declare their fields with :func:`param` (or ``SOME_PARAM.field()``) and call :func:`validate` in
``__post_init__``; ``recsys.entry_points`` lists every entry point's parameters, from which the
CLI builds its options and the jobs take their defaults (and a test checks ``MLproject``).

Every validator accepts the strings the CLI and ``MLproject`` pass as well as Python values, and
raises :class:`~recsys.errors.RecsysError` in one format naming the parameter, the value given
and what is allowed: ``rank=0 must be an integer >= 1``, ``alpha=0 must be a finite number > 0``,
``method='x' is unknown; allowed: banded, approx_join, exact``, ``force='perhaps' must be true or
false``. Numbers are shown as given, words quoted.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from recsys.core.constants import DEFAULT_K, DEFAULT_RELEVANCE_THRESHOLD, DEFAULT_SEED, MAX_RATING, MIN_RATING
from recsys.core.errors import RecsysError

TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes"), ("false", "0", "no")
KINDS = ("int", "float", "bool", "choice", "str", "list")

# ---------------------------------------------------------------- validators


def int_rule(low: int | None = None, high: int | None = None) -> str:
    """What an integer parameter may be: ``an integer >= 1``, ``an integer in 1..1024``."""
    if low is not None and high is not None:
        return f"an integer in {low}..{high}"
    if low is not None:
        return f"an integer >= {low}"
    return "an integer" if high is None else f"an integer <= {high}"


def float_range(low=None, high=None, low_open=False, high_open=False) -> str:
    """The range part of a number's rule: ``>= 0``, ``> 0``, ``in [0.5, 5]``, ``in (0, 1)``, ``""``."""
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return ""


def _as_integer(value) -> int | None:
    """``value`` as an int when it is one (``7``, ``"7"``, ``7.0``, ``"7.0"``), else None."""
    if isinstance(value, int):
        return int(value)
    try:
        return int(str(value).strip())  # exact, however large
    except ValueError:
        pass
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) and number == int(number) else None


def check_int(name: str, value, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int in ``low..high`` (either bound optional)."""
    number = _as_integer(value)
    if number is None or (low is not None and number < low) or (high is not None and number > high):
        raise RecsysError(f"{name}={value} must be {int_rule(low, high)}")
    return number


def check_float(name: str, value, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite float within the bounds; ``*_open`` excludes the bound itself."""
    rule = float_range(low, high, low_open, high_open)
    rule = f" {rule}" if rule else ""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RecsysError(f"{name}={value} must be a number{rule}") from None
    too_low = low is not None and (number <= low if low_open else number < low)
    too_high = high is not None and (number >= high if high_open else number > high)
    if not math.isfinite(number) or too_low or too_high:
        raise RecsysError(f"{name}={value} must be a finite number{rule}")
    return number


def check_bool(name: str, value) -> bool:
    """A bool, or ``true/false``, ``1/0``, ``yes/no`` in any case."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS or text in FALSE_WORDS:
        return text in TRUE_WORDS
    raise RecsysError(f"{name}={value!r} must be true or false")


def check_choice(name: str, value, choices) -> str:
    """``value`` if it is one of ``choices``."""
    if value not in tuple(choices):
        raise RecsysError(f"{name}={value!r} is unknown; allowed: {', '.join(choices)}")
    return value


# ---------------------------------------------------------------- the declaration


@dataclass(frozen=True)
class Param:
    """One parameter: name, default, help, kind and range; what validates, documents and renders it.

    ``kind`` (inferred from the default when empty): ``int`` and ``float`` (bounds ``low`` and
    ``high``, ``*_open`` to exclude them), ``bool``, ``choice`` (``choices``), ``str`` and ``list``
    (not checked here: a config's own rule or the job reads them). ``option`` is the CLI option
    (default ``--name-with-dashes``); ``multiple`` makes it repeatable. Every ``MLproject``
    parameter is a string: the CLI (through these validators) gives the clearer messages.
    """

    name: str
    default: Any
    help: str = ""
    kind: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    option: str = ""
    multiple: bool = False
    metavar: str | None = None
    mlproject_type: str = "string"

    def __post_init__(self):
        if not self.kind:
            object.__setattr__(self, "kind", _kind_of(self.default, self.choices))
        if self.kind not in KINDS:
            raise ValueError(f"parameter {self.name}: kind {self.kind!r} is not one of {KINDS}")

    def check(self, value, name: str | None = None):
        """``value`` converted to the kind, or a RecsysError naming the parameter."""
        name = name or self.name
        if self.kind == "int":
            return check_int(name, value, self.low, self.high)
        if self.kind == "float":
            return check_float(name, value, self.low, self.high, low_open=self.low_open,
                               high_open=self.high_open)
        if self.kind == "bool":
            return check_bool(name, value)
        if self.kind == "choice":
            return check_choice(name, value, self.choices)
        return value

    def allowed(self) -> str:
        """What the value may be, in words ("" for free text)."""
        if self.kind == "int":
            return int_rule(self.low, self.high)
        if self.kind == "float":
            rule = float_range(self.low, self.high, self.low_open, self.high_open)
            return f"a number {rule}" if rule else "a number"
        if self.kind == "bool":
            return "true or false"
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        return ""

    def help_text(self) -> str:
        allowed = self.allowed()
        return f"{self.help.rstrip('.')}; {allowed}." if allowed and self.help else self.help or allowed

    def render(self, value=None) -> str:
        """A value (the default when None) as the CLI and MLproject write it."""
        return _render(self.default if value is None else value)

    @property
    def cli_option(self) -> str:
        return self.option or "--" + self.name.replace("_", "-")

    def but(self, **changes) -> Param:
        """This parameter with some attributes changed (another help, default or range)."""
        return dataclasses.replace(self, **changes)

    def field(self, **changes):
        """A dataclass field holding this parameter (``changes`` as in :meth:`but`)."""
        declared = self.but(**changes)
        return dataclasses.field(default=declared.default, metadata={"param": declared})


def _kind_of(default, choices) -> str:
    if choices:
        return "choice"
    for kind, types in (("bool", bool), ("int", int), ("float", float), ("list", (tuple, list))):
        if isinstance(default, types):
            return kind
    return "str"


def _render(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (tuple, list)):
        return ",".join(_render(v) for v in value)
    return str(value)


def param(default, help: str = "", **rule):
    """A config dataclass field declared as a :class:`Param`; its name is the field's."""
    return Param("", default, help, **rule).field()


def params_of(config_class) -> list[Param]:
    """The declared parameters of a config dataclass, in field order, named after the fields."""
    return [f.metadata["param"].but(name=f.name)
            for f in dataclasses.fields(config_class) if "param" in f.metadata]


def validate(config) -> None:
    """Check and convert every declared field of a frozen config dataclass (in ``__post_init__``)."""
    for f in dataclasses.fields(config):
        declared = f.metadata.get("param")
        if declared is not None:
            object.__setattr__(config, f.name, declared.check(getattr(config, f.name), f.name))


# ---------------------------------------------------------------- shared by several configs

SEED = Param("seed", DEFAULT_SEED, "Seed of every random choice.")
K = Param("k", DEFAULT_K, "Cut-off of the ranking metrics.", low=1)
RELEVANCE_THRESHOLD = Param("relevance_threshold", DEFAULT_RELEVANCE_THRESHOLD,
                            "Held-out ratings at least this high are relevant.",
                            low=MIN_RATING, high=MAX_RATING)
MAX_ITER = Param("max_iter", 10, "ALS sweeps.", low=1)
