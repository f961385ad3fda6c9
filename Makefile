# make test  : install what is missing, configure, build, run every test this machine can run
# make bench : the same setup, then `dilated bench --suite default` on the best backend here
# make python-test : `pip install .` into the Python venv, then pytest tests/python (part of test)
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
PY_VENV ?= $(or $(DILATED_PY_VENV),$(HOME)/.cache/dilated-attention/venv)
# The C++ build above already compiles CUDA where nvcc exists; the Python tests run on the
# CPU, so the extension skips it here (plain `pip install .` uses AUTO).
PY_CUDA ?= OFF

.PHONY: all deps configure build test python-test bench format clean

all: build

deps:
	DILATED_PY_VENV=$(PY_VENV) ./scripts/install_deps.sh

configure: deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

build: configure
	cmake --build $(BUILD) -j $(JOBS)

test: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)
	$(MAKE) --no-print-directory python-test

python-test: deps
	DILATED_CUDA=$(PY_CUDA) CMAKE_BUILD_PARALLEL_LEVEL=$(JOBS) $(PY_VENV)/bin/python -m pip install --quiet --no-build-isolation --no-deps .
	$(PY_VENV)/bin/python -m pytest tests/python -q

bench: build
	$(BUILD)/bin/dilated bench --suite default

format:
	clang-format -i $$(git ls-files '*.cpp' '*.hpp' '*.cu' '*.cuh')

clean:
	rm -rf $(BUILD)
