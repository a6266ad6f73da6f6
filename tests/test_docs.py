"""The documentation: the site builds with ``mkdocs build --strict`` (a broken link, a
page missing from the navigation or an API object that does not resolve fails), the
examples in the docstrings run as doctests, the README stays a README, and nothing in
the documentation points outside the repository."""
import doctest
import importlib
import os
import re
import subprocess
import sys

import pytest

import deformgan_ops as D

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The modules whose docstrings carry runnable examples: every public operator's module
# and the main entry points of the system.
EXAMPLE_MODULES = [
    "deformgan_ops.ops.part_affine_warp",
    "deformgan_ops.ops.keypoint_heatmaps",
    "deformgan_ops.ops.nn_loss",
    "deformgan_ops.ops.part_masks",
    "deformgan_ops.ops.part_affines",
    "deformgan.generate",
    "deformgan.geometry",
    "deformgan.metrics",
    "deformgan.scoring",
    "deformgan.images",
]


@pytest.mark.parametrize("module", EXAMPLE_MODULES)
def test_docstring_examples_run(module):
    mod = importlib.import_module(module)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    tests = [t for t in finder.find(mod, module) if t.examples]
    assert tests, f"{module} has no examples in its docstrings"
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {module} failed (printed above)"


def test_every_operator_has_an_example():
    """Every operator of the registry shows a runnable example in its docstring."""
    for name in D.operators():
        doc = getattr(D, name).__doc__ or ""
        assert "Example:" in doc and ">>> " in doc, name


def test_site_builds_strict(tmp_path):
    mkdocs = pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install -e '.[docs]'")
    assert mkdocs
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    for page in ("index.html", "method/index.html", "api/deformgan_ops/index.html", "api/deformgan/index.html",
                 "guide/training/index.html"):
        assert (tmp_path / "site" / page).is_file(), page
    api = (tmp_path / "site" / "api" / "deformgan_ops" / "index.html").read_text()
    for name in D.operators():  # the API reference documents every operator
        assert f'id="deformgan_ops.ops.{name}.{name}"' in api, name


def _documents():
    yield os.path.join(ROOT, "README.md")
    for folder, _, files in os.walk(os.path.join(ROOT, "docs")):
        for f in files:
            if f.endswith(".md"):
                yield os.path.join(folder, f)


def test_readme_is_short_and_documents_point_inside_the_repository():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        readme = fh.read()
    assert len(readme.splitlines()) <= 300
    for path in _documents():
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        rel = os.path.relpath(path, ROOT)
        assert "../shared" not in text and "/work/" not in text and "SPEC" not in text, rel
        # relative links resolve inside the repository
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target or target.startswith("mailto:"):
                continue
            resolved = os.path.normpath(os.path.join(os.path.dirname(path), target))
            assert resolved.startswith(ROOT + os.sep) and os.path.exists(resolved), (rel, target)


def test_every_environment_variable_is_in_the_readme_table():
    """The README's table lists every DEFORMGAN_* variable the Python code, the build
    and the kernels read."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        readme = fh.read()
    read = set()
    patterns = (r"environ(?:\.get)?\(\s*\"(DEFORMGAN_[A-Z0-9_]+)\"", r"environ\[\"(DEFORMGAN_[A-Z0-9_]+)\"\]",
                r"getenv\(\"(DEFORMGAN_[A-Z0-9_]+)\"\)", r"ENV_VAR = \"(DEFORMGAN_[A-Z0-9_]+)\"")
    for folder in ("deformgan", "deformgan_ops", "csrc", "benchmarks"):
        for base, _, files in os.walk(os.path.join(ROOT, folder)):
            for f in files:
                if f.endswith((".py", ".cpp", ".h", ".cu")):
                    with open(os.path.join(base, f), encoding="utf-8") as fh:
                        text = fh.read()
                    for p in patterns:
                        read.update(re.findall(p, text))
    with open(os.path.join(ROOT, "setup.py"), encoding="utf-8") as fh:
        text = fh.read()
    for p in patterns:
        read.update(re.findall(p, text))
    assert read >= {"DEFORMGAN_OPS_BACKEND", "DEFORMGAN_NO_CUDA", "DEFORMGAN_CPU_TRANSPOSE"}
    for name in sorted(read):
        assert f"`{name}" in readme, name
