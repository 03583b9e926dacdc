# `make demo` and `make test` set everything up on first use (a .venv beside this file).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test clean

$(BIN)/deconvviz: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

setup: $(BIN)/deconvviz

demo: setup
	$(BIN)/deconvviz show --model zfnet --layer conv3 examples/images/chelsea.png

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) *.egg-info
