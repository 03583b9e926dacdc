# `make demo` and `make test` set everything up on first use (a .venv beside this file).
# `make demo` installs only what running deconvviz needs; `make test` adds the test tools.
# On a machine without a GPU, `make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu`
# takes PyTorch's CPU-only wheels (about 700 MB instead of several GB of CUDA libraries).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_INDEX ?=

.PHONY: setup demo test lint agreement coverage clean torch-hint

$(VENV)/.runtime: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(MAKE) --no-print-directory torch-hint
	$(if $(TORCH_INDEX),$(BIN)/pip install -q --index-url $(TORCH_INDEX) torch torchvision)
	$(BIN)/pip install -q -e .
	touch $@

# Before the install: where no GPU is seen (no nvidia-smi) and TORCH_INDEX is unset, how to
# take the CPU build instead of the default wheels' CUDA libraries.
torch-hint:
	@$(if $(TORCH_INDEX),:,command -v nvidia-smi >/dev/null 2>&1 || echo "No GPU here (no \
	nvidia-smi): PyTorch's default wheels bring several GB of CUDA libraries. For its \
	~700-MB CPU build, stop now (Ctrl-C) and run: make demo \
	TORCH_INDEX=https://download.pytorch.org/whl/cpu")

$(VENV)/.test: $(VENV)/.runtime
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.runtime

demo: setup
	$(BIN)/deconvviz show --model zfnet --layer conv3 examples/images/chelsea.png

lint: $(VENV)/.test
	$(BIN)/ruff check deconvviz tests benchmarks scripts
	$(BIN)/lint-imports

# Two workers (pytest-xdist), one core and one torch thread each, whole test files apiece, the
# slowest first (tests/conftest.py, SLOWEST_FIRST).
test: lint
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=20

# The agreement tests (pytest -m agreement) under four CPU kernel settings at 1 and 2 threads;
# not part of `make test` (see the README's "Contributing").
agreement: $(VENV)/.test
	PYTHON=$(BIN)/python scripts/kernel_matrix.sh

# Line and branch coverage of the package, over the whole suite.
coverage: $(VENV)/.test
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --cov=deconvviz --cov-branch --cov-report=term

clean:
	rm -rf $(VENV) *.egg-info
