"""deformgan.cli_types: each range's text, its edges, open and closed ends, and the
command-line parsing that every CLI's numeric flags go through."""
import argparse
import math

import pytest

from deformgan import cli_types as T


def test_the_allowed_text_of_each_kind_of_range():
    assert T.int_at_least(0).allowed == "an int >= 0" and T.int_at_least(3, odd=True).allowed == "an odd int >= 3"
    assert T.positive_int.allowed == "an int >= 1"
    assert T.real_in(0, 1).allowed == "a number in [0, 1]"
    assert T.real_in(0, 16, low_open=True).allowed == "a number in (0, 16]"
    assert T.real_in(0.5, 2.25, high_open=True).allowed == "a number in [0.5, 2.25)"
    assert T.real_in(-1, 1, True, True).allowed == "a number in (-1, 1)"
    assert T.real_in(0).allowed == "a number >= 0" and T.real_in(1e-3, low_open=True).allowed == "a number > 0.001"
    r = T.real_in(0, 1)
    assert r.__name__ == r.allowed and (r.low, r.high, r.low_open, r.high_open, r.odd, r.integer) == \
        (0, 1, False, False, False, False)
    i = T.int_at_least(2, odd=True)
    assert (i.low, i.high, i.low_open, i.high_open, i.odd, i.integer) == (2, math.inf, False, False, True, True)


def test_check_at_the_edges():
    closed, opened = T.real_in(0, 1), T.real_in(0, 1, low_open=True, high_open=True)
    for v in (0, 0.0, 1, 1.0, 0.5):
        assert closed.check(v) is None
    for v in (0, 1, 0.0, 1.0):
        assert opened.check(v) == f"must be a number in (0, 1), got {v!r}"
    assert opened.check(1e-12) is None and opened.check(1 - 1e-12) is None
    for v in (-1e-12, 1 + 1e-12, math.inf, -math.inf, math.nan, True, False, "0.5", None):
        assert closed.check(v) == f"must be a number in [0, 1], got {v!r}"
    unbounded = T.real_in(2)
    assert unbounded.check(1e300) is None and unbounded.check(2) is None
    assert unbounded.check(math.inf) == "must be a number >= 2, got inf"
    ints = T.int_at_least(1)
    assert ints.check(1) is None and ints.check(10 ** 20) is None
    for v in (0, -5, 1.0, 2.5, True, "3"):
        assert ints.check(v) == f"must be an int >= 1, got {v!r}"
    odd = T.int_at_least(1, odd=True)
    assert [odd.check(v) is None for v in (1, 2, 3, 4, 5, -1)] == [True, False, True, False, True, False]
    assert odd.check(4) == "must be an odd int >= 1, got 4"


def test_parsing_command_line_text():
    assert T.positive_int("7") == 7 and type(T.positive_int("7")) is int
    assert T.real_in(0, 1)("0.25") == 0.25 and type(T.real_in(0, 1)("1")) is float
    for text, message in (("0", "must be an int >= 1, got 0"), ("1.5", "must be an int >= 1, got '1.5'"),
                          ("x", "must be an int >= 1, got 'x'"), ("", "must be an int >= 1, got ''")):
        with pytest.raises(argparse.ArgumentTypeError) as err:
            T.positive_int(text)
        assert str(err.value) == message
    for text, message in (("nan", "must be a number in [0, 1], got nan"), ("2", "must be a number in [0, 1], got 2.0"),
                          ("half", "must be a number in [0, 1], got 'half'")):
        with pytest.raises(argparse.ArgumentTypeError) as err:
            T.real_in(0, 1)(text)
        assert str(err.value) == message
    ap = argparse.ArgumentParser(prog="p", exit_on_error=False)
    ap.add_argument("--steps", type=T.positive_int)
    assert ap.parse_args(["--steps", "3"]).steps == 3
    with pytest.raises(argparse.ArgumentError) as err:
        ap.parse_args(["--steps", "0"])
    assert str(err.value) == "argument --steps: must be an int >= 1, got 0"
