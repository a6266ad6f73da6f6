"""Allowed ranges of numeric options, one definition each, used two ways:

- as an argparse ``type=``: a bad value exits with code 2 and
  ``argument --FLAG: must be <range>, got <value>``;
- by :meth:`Range.check` on a value that came from elsewhere (a config file, a
  preset), which returns the same ``must be <range>, got <value>`` text or None.
"""
import argparse
import math
from typing import Optional


class Range:
    """An int or real range; calling it parses a command-line string."""

    def __init__(self, integer: bool, low: float, high: float = math.inf, low_open: bool = False,
                 high_open: bool = False, odd: bool = False):
        self.integer, self.low, self.high = integer, low, high
        self.low_open, self.high_open, self.odd = low_open, high_open, odd
        if integer:
            self.allowed = f"an {'odd ' if odd else ''}int >= {int(low)}"
        else:
            lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
            self.allowed = f"a number in {lo}{low:g}, {high:g}{hi}" if math.isfinite(high) else \
                f"a number {'>' if low_open else '>='} {low:g}"
        self.__name__ = self.allowed  # argparse names the type in some messages

    def check(self, v) -> Optional[str]:
        """None when ``v`` is in range, else ``"must be <range>, got <v>"``."""
        typed = isinstance(v, int) if self.integer else isinstance(v, (int, float))
        ok = typed and not isinstance(v, bool) and math.isfinite(v)
        ok = ok and (v > self.low if self.low_open else v >= self.low)
        ok = ok and (v < self.high if self.high_open else v <= self.high)
        ok = ok and (not self.odd or v % 2 == 1)
        return None if ok else f"must be {self.allowed}, got {v!r}"

    def __call__(self, text: str):
        try:
            v = int(text) if self.integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {self.allowed}, got {text!r}") from None
        error = self.check(v)
        if error:
            raise argparse.ArgumentTypeError(error)
        return v


def int_at_least(low: int, odd: bool = False) -> Range:
    return Range(True, low, odd=odd)


def real_in(low: float, high: float = math.inf, low_open: bool = False, high_open: bool = False) -> Range:
    return Range(False, low, high, low_open, high_open)


positive_int = int_at_least(1)
