# Two commands on a fresh machine: `make run` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# torch is installed first and pinned: pip then finds the CPU build; an unpinned torch pulls CUDA (GBs).
TORCH := torch==2.13.0

.PHONY: install install-dev run test lint clean

$(BIN)/python:
	@command -v $(PY) >/dev/null 2>&1 || { echo "需要 Python 3.11 (python3.11 not found; set PY=/path/to/python3.11)"; exit 2; }
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

run: install
	$(BIN)/livebot run $(if $(CONFIG),--config $(CONFIG),)

# pytest exit code 5 (no tests collected) must fail, so it is not masked.
test: install-dev
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check bot nlp tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info
