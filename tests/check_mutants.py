"""Check mutmut's mutants against chosen test files, fast (development loop only, not CI).

``mutmut run`` starts a fresh pytest (torch imported again, ~4 s) for every mutant and
runs every test that reaches the mutated function; this runs each mutant against the
test files you name, all in one process: mutmut's trampolines read
``MUTANT_UNDER_TEST`` on every call, so one ``pytest.main`` per mutant is enough
(~0.2-1 s each). Functions that run when a module is imported (a module-level
``positive_int = int_at_least(1)``) are only seen in a fresh process: ``--subprocess``.

First let mutmut write ``mutants/`` (``mutmut run "deformgan.config*"``, stopped once it
says "Running stats"), then, from the repository root::

    python tests/check_mutants.py "deformgan.config.*" --tests tests/test_config.py

It prints each survivor's name and the tally; ``mutmut show NAME`` prints its diff.
Exit status 0 when every mutant was killed, 1 when some survived, 2 when the tests fail
with no mutant active, before the run or after it (a mutant that left a file behind, for
example, makes every later mutant look killed).
"""
import argparse
import contextlib
import fnmatch
import io
import os
import re
import signal
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MUTANTS = os.path.join(ROOT, "mutants")


def mutant_names(pattern: str):
    """Every mutant name in ``mutants/`` that matches ``pattern`` (fnmatch), in file order."""
    names = []
    for folder, _, files in os.walk(MUTANTS):
        for f in sorted(files):
            if not f.endswith(".py") or os.path.relpath(folder, MUTANTS).split(os.sep)[0] == "tests":
                continue
            module = os.path.relpath(os.path.join(folder, f[:-3]), MUTANTS).replace(os.sep, ".")
            with open(os.path.join(folder, f), encoding="utf-8") as fh:
                found = re.findall(r"\b(x[_ǁ][\wǁ]*?__mutmut_\d+)\b", fh.read())
            names += [n for n in dict.fromkeys(f"{module}.{m}" for m in found) if fnmatch.fnmatch(n, pattern)]
    return names


class _Timeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Timeout()


def _in_process(name: str, tests, timeout: int) -> int:
    os.environ["MUTANT_UNDER_TEST"] = name
    signal.alarm(timeout)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            import pytest
            return int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", *tests]))
    except _Timeout:
        return -1
    finally:
        signal.alarm(0)


def _fresh_process(name: str, tests, timeout: int) -> int:
    env = dict(os.environ, MUTANT_UNDER_TEST=name)
    try:
        return subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                              cwd=MUTANTS, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        return -1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pattern", nargs="+", help='mutant names, fnmatch: "deformgan.config.*", '
                    '"deformgan.checkpoint.x_load*"; several: every mutant any of them matches (survivors '
                    'of a first pass checked again against more tests, say)')
    ap.add_argument("--tests", nargs="+", required=True, help="test files (paths from the repository root)")
    ap.add_argument("--subprocess", action="store_true", help="a fresh pytest per mutant (import-time code)")
    ap.add_argument("--timeout", type=int, default=120, help="seconds per mutant; over it counts as killed")
    args = ap.parse_args(argv)
    if not os.path.isdir(MUTANTS):
        ap.error(f"{MUTANTS} not found: run `mutmut run` first (it writes the mutated copies there)")
    names = []
    for pattern in args.pattern:
        matched = mutant_names(pattern)
        if not matched:
            ap.error(f"no mutant matches {pattern!r} in {MUTANTS} (is the module in [tool.mutmut] only_mutate?)")
        names += [n for n in matched if n not in names]
    missing = [t for t in args.tests if not os.path.exists(os.path.join(MUTANTS, t.split("::")[0]))]
    if missing:
        ap.error(f"not in {MUTANTS}: {missing} (mutmut copies tests/ there; copy a new test file in)")
    os.chdir(MUTANTS)
    sys.path.insert(0, MUTANTS)  # the mutated copies, not the installed package
    signal.signal(signal.SIGALRM, _on_alarm)
    run = _fresh_process if args.subprocess else _in_process
    # no mutant active (a name no trampoline knows): the tests must pass, or every mutant would look killed
    no_mutant = names[0].rsplit(".", 1)[0] + ".x_none__mutmut_0"
    if run(no_mutant, args.tests, args.timeout) != 0:
        print(f"the tests fail with no mutant active: fix them first ({' '.join(args.tests)})", file=sys.stderr)
        return 2
    survivors, timeouts = [], 0
    for i, name in enumerate(names, 1):
        rc = run(name, args.tests, args.timeout)
        timeouts += rc == -1
        if rc == 0:
            survivors.append(name)
            print(f"survived: {name}", flush=True)
        if i % 25 == 0:
            print(f"{i}/{len(names)} checked", file=sys.stderr, flush=True)
    print(f"{len(names)} mutants, {len(names) - len(survivors)} killed ({timeouts} by timeout), "
          f"{len(survivors)} survived")
    # and again at the end: a mutant that left a file in mutants/ or changed state this process keeps
    # makes the tests fail for every mutant after it, and those kills are false
    if run(no_mutant, args.tests, args.timeout) != 0:
        print("the tests fail with no mutant active AFTER the run: a mutant left a file or changed state that "
              "later tests trip on, so kills may be false; make the tests independent of it and run again",
              file=sys.stderr)
        return 2
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
