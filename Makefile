# Two commands on a fresh machine (Python >= 3.10, a C++20 compiler, make):
#   make demo   # install everything into .venv, then train the demo (~5 min install + ~5 min training, 2 cores)
#   make test   # install if needed, then run the tests (what CI runs)
#   make docs   # build the documentation site into site/
# Options: VENV=dir (default .venv), PYTHON=python3.x, ARGS="..." for make demo,
# MAX_JOBS=n parallel compile jobs (default 2), DEFORMGAN_NO_CUDA=1 to skip the CUDA kernels.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
MAX_JOBS ?= 2
export MAX_JOBS
SOURCES := setup.py pyproject.toml $(shell find csrc -name "*.cpp" -o -name "*.h" -o -name "*.cu" -o -name "*.cuh")

.PHONY: demo test install info docs

demo: $(VENV)/.installed
	$(PY) -m deformgan.train $(ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest -q tests

install: $(VENV)/.installed

docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

info: $(VENV)/.installed
	$(PY) -m deformgan_ops.info

# torch first (the extension is compiled against it, hence --no-build-isolation).
$(VENV)/.installed: $(SOURCES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install torch==2.14.1 torchvision==0.29.1 ninja
	$(PY) -m pip install --no-build-isolation -e ".[test,docs]"
	$(PY) -m deformgan_ops.info
	touch $@
