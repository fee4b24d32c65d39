"""The shared validators: one message format, strings (CLI, MLproject) and Python values alike."""

from __future__ import annotations

import math

import pytest

from recsys.core import Param, RecsysError, check_bool, check_choice, check_float, check_int


@pytest.mark.parametrize("value, want", [(7, 7), ("7", 7), (" 7 ", 7), (7.0, 7), ("7.0", 7),
                                         (str(2**63 - 1), 2**63 - 1)])
def test_check_int_accepts_integers_given_any_way(value, want):
    assert check_int("n", value, 0, 2**63 - 1) == want


@pytest.mark.parametrize("value, low, high, message", [
    (0, 1, None, "n=0 must be an integer >= 1"),
    ("2.5", 1, None, "n=2.5 must be an integer >= 1"),
    ("many", 1, 9, "n=many must be an integer in 1..9"),
    (float("nan"), None, None, "n=nan must be an integer"),
    (10, None, 9, "n=10 must be an integer <= 9"),
])
def test_check_int_names_the_value_and_the_rule(value, low, high, message):
    with pytest.raises(RecsysError) as err:
        check_int("n", value, low, high)
    assert str(err.value) == message


def test_check_float_bounds_open_and_closed():
    assert check_float("x", "0.5", 0.0, 1.0, low_open=True, high_open=True) == 0.5
    assert check_float("x", 0, low=0.0) == 0.0
    for value, message in [(0, "x=0 must be a finite number in (0, 1)"),
                           ("abc", "x=abc must be a number in (0, 1)"),
                           (math.inf, "x=inf must be a finite number in (0, 1)")]:
        with pytest.raises(RecsysError) as err:
            check_float("x", value, 0.0, 1.0, low_open=True, high_open=True)
        assert str(err.value) == message


def test_check_bool_and_check_choice():
    assert [check_bool("b", v) for v in (True, "TRUE", "1", "yes", False, "false", "0", "No")] == \
        [True] * 4 + [False] * 4
    with pytest.raises(RecsysError, match="b='maybe' must be true or false"):
        check_bool("b", "maybe")
    assert check_choice("m", "exact", ("banded", "exact")) == "exact"
    with pytest.raises(RecsysError, match="m='x' is unknown; allowed: banded, exact"):
        check_choice("m", "x", ("banded", "exact"))


def test_param_infers_its_kind_renders_and_describes_itself():
    assert Param("a", 1.0, low=0.0).kind == "float" and Param("a", True).kind == "bool"
    assert Param("a", 3).render() == "3" and Param("a", False).render() == "false"
    assert Param("a", (0.8, 0.1, 0.1)).render() == "0.8,0.1,0.1" and Param("a", ()).render() == ""
    rank = Param("rank", 10, "Latent factors.", low=1)
    assert rank.help_text() == "Latent factors; an integer >= 1."
    assert rank.cli_option == "--rank" and Param("reg_param", 0.1).cli_option == "--reg-param"
    assert Param("m", "a", choices=("a", "b")).check("b") == "b"
