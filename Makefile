# d2c_fast: set-up and the two commands of the README.
#   make demo   -> fresh venv (torch 2.13.0: the local CPU wheel on CI-like machines; the C++
#                  extension), then demo.png
#   make test   -> same set-up, then the test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.d2c_fast_installed
TORCH_CMAKE = $(shell $(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')

# The Triton kernels' tests run on the CPU under the Triton interpreter: the triton release that
# works there with the pinned torch and numpy.
TRITON := triton==3.8.0

.PHONY: demo test venv cmake bench bench-quick clean

$(STAMP): Makefile setup.py pyproject.toml $(wildcard csrc/*.cpp csrc/cpu/*.cpp csrc/cpu/*.h)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q torch==2.13.0 $(TRITON)
	$(PY) -m pip install -q setuptools wheel ninja numpy
	$(PY) -m pip install -q -e ".[test]" --no-build-isolation
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/d2c-fast demo -o demo.png

test: $(STAMP)
	D2C_FAST_REQUIRE_EXT=1 $(PY) -m pytest -q -rs tests

# The same csrc/ as a plain shared library for torch.ops.load_library (C++/libtorch embedding).
cmake: $(STAMP)
	cmake -S . -B build/cmake -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$(TORCH_CMAKE)"
	cmake --build build/cmake -j2

# The accuracy gate first (fast vs ref on ARCH-256), then the timings; the JSON goes to
# build/bench.json (pytest-benchmark's table is printed either way).
BENCH_OPS := bench_cpu.py bench_op_bn_swish.py bench_op_dwconv.py bench_op_se_residual.py \
  bench_op_mbconv.py
bench: $(STAMP)
	mkdir -p build
	cd benchmarks && ../$(PY) -m pytest -q bench_cpu.py -k accuracy_gate
	cd benchmarks && ../$(PY) -m pytest -q $(BENCH_OPS) --benchmark-only \
	  --benchmark-group-by=group --benchmark-json=$(CURDIR)/build/bench.json

# For a newcomer (and CI): the same entry point on a small model, one round of each workload.
bench-quick: $(STAMP)
	mkdir -p build
	cd benchmarks && ../$(PY) -m pytest -q --quick bench_cpu.py -k accuracy_gate
	cd benchmarks && ../$(PY) -m pytest -q --quick $(BENCH_OPS) --benchmark-only \
	  --benchmark-group-by=group --benchmark-json=$(CURDIR)/build/bench-quick.json

clean:
	rm -rf build d2c_fast/_C*.so
