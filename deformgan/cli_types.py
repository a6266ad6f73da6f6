"""argparse types for numeric flags: a bad value exits with code 2 and a message
``argument --FLAG: must be ..., got ...`` naming the flag and the allowed range."""
import argparse
import math


def int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an int >= {low}, got {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be an int >= {low}, got {v}")
        return v

    parse.__name__ = f"int >= {low}"
    return parse


def real_in(low: float, high: float, low_open: bool = False, high_open: bool = False):
    def parse(text: str) -> float:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        allowed = f"a number in {lo}{low:g}, {high:g}{hi}"
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}") from None
        ok = math.isfinite(v) and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
        if not ok:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {v}")
        return v

    parse.__name__ = "number"
    return parse


positive_int = int_at_least(1)
