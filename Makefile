# Two commands on a fresh machine (Python >= 3.10, a C++20 compiler, make):
#   make demo   # install everything into .venv, then train the demo (~5 min install + ~5 min training, 2 cores)
#   make test   # install if needed, then run the tests (what CI runs)
#   make docs   # build the documentation site into site/
#   make test-fast  # everything but the tests marked slow: the development loop
# Options: VENV=dir (default .venv), PYTHON=python3.x, ARGS="..." for make demo,
# MAX_JOBS=n parallel compile jobs (default 2), DEFORMGAN_NO_CUDA=1 to skip the CUDA kernels.
# TORCH=installed: build against the torch PYTHON already has (a GPU machine's own, offline):
#   the environment sees the system's packages and nothing is downloaded.
# make gpu-check: on a GPU machine, build in place against its torch and run the GPU check.
# make test-compat: the operator and Triton-interpreter tests on torch 2.11 / triton 3.6 / Python 3.12.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
TORCH ?= pinned
ifeq ($(TORCH),installed)
VENV_FLAGS := --system-site-packages
TORCH_STEP := $(PY) -c "import torch; print('[make] using the installed torch', torch.__version__, 'from', torch.__file__)"
PIP_FLAGS := --no-deps
EXTRAS :=
else
VENV_FLAGS :=
TORCH_STEP := $(PY) -m pip install torch==2.14.1 torchvision==0.29.1 ninja
PIP_FLAGS :=
EXTRAS := [test,docs]
endif
GPU_OUT ?= gpu-report
COMPAT_PYTHON ?= python3.12
COMPAT_VENV ?= .venv-torch211
COMPAT_TESTS := tests/test_part_affine_warp.py tests/test_nn_loss.py tests/test_keypoint_heatmaps.py \
	tests/test_pose_geometry.py tests/test_registry.py tests/test_op_failure_behaviour.py \
	tests/test_low_precision_cpu.py tests/test_autocast.py tests/test_triton_interpret.py tests/test_gpu_check.py
MAX_JOBS ?= 2
export MAX_JOBS
SOURCES := setup.py pyproject.toml $(shell find csrc -name "*.cpp" -o -name "*.h" -o -name "*.cu" -o -name "*.cuh")

.PHONY: demo test test-fast install info docs gpu-check test-compat

demo: $(VENV)/.installed
	$(PY) -m deformgan.train $(ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest -q tests

# the development loop: everything but the tests marked slow (tests/slow_tests.txt)
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q tests -m "not slow"

install: $(VENV)/.installed

docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

gpu-check:
	TORCH_CUDA_ARCH_LIST="$${TORCH_CUDA_ARCH_LIST:-9.0}" $(PYTHON) setup.py build_ext --inplace
	$(PYTHON) benchmarks/gpu_check.py --out $(GPU_OUT)

# numpy < 2.4: the interpreter of triton 3.6 converts 1-element arrays to ints, which numpy 2.4 refuses.
test-compat:
	test -x $(COMPAT_VENV)/bin/python || $(COMPAT_PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/python -m pip install torch==2.11.0 torchvision==0.26.0 triton==3.6.0 ninja \
	    pytest hypothesis expecttest "numpy<2.4" pillow tqdm scipy scikit-image
	DEFORMGAN_NO_CUDA=1 DEFORMGAN_FORCE_CUDA=0 $(COMPAT_VENV)/bin/python setup.py build_ext --inplace
	$(COMPAT_VENV)/bin/python -m deformgan_ops.info
	DEFORMGAN_FORCE_CUDA=0 $(COMPAT_VENV)/bin/python -m pytest -q $(COMPAT_TESTS)

info: $(VENV)/.installed
	$(PY) -m deformgan_ops.info

# torch first (the extension is compiled against it, hence --no-build-isolation).
$(VENV)/.installed: $(SOURCES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(TORCH_STEP)
	$(PY) -m pip install --no-build-isolation $(PIP_FLAGS) -e ".$(EXTRAS)"
	$(PY) -m deformgan_ops.info
	touch $@
