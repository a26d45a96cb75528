# d2c_fast: set-up and the two commands of the README.
#   make demo   -> fresh venv (torch 2.13.0 CPU wheel, the C++ extension), then demo.png
#   make test   -> same set-up, then the test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.d2c_fast_installed
TORCH_CMAKE = $(shell $(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')

.PHONY: demo test venv cmake bench clean

$(STAMP): setup.py pyproject.toml $(wildcard csrc/*.cpp csrc/cpu/*.cpp csrc/cpu/*.h)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q setuptools wheel ninja numpy
	$(PY) -m pip install -q -e ".[test]" --no-build-isolation
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/d2c-fast demo -o demo.png

test: $(STAMP)
	D2C_FAST_REQUIRE_EXT=1 $(PY) -m pytest -q tests

# The same csrc/ as a plain shared library for torch.ops.load_library (C++/libtorch embedding).
cmake: $(STAMP)
	cmake -S . -B build/cmake -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$(TORCH_CMAKE)"
	cmake --build build/cmake -j2

bench: $(STAMP)
	cd benchmarks && ../$(PY) -m pytest -q bench_cpu.py bench_op_bn_swish.py --benchmark-only \
	  --benchmark-group-by=group --benchmark-json=../build/bench.json

clean:
	rm -rf build d2c_fast/_C*.so
