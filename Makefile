# Two commands on a fresh machine:  `make run` (set up, then the main job)  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
# The torch build this project is tested with; pip takes it from the local wheel store here.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin

.PHONY: setup run test test-fast lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: setup
	$(BIN)/robustsdd run

test: setup
	$(BIN)/python -m pytest -q

# Everything but the tests marked slow (subprocesses, Ray, a browser, real data).
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) runs .pytest_cache
