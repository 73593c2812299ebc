# Two entry points: `make test` and `make demo`; each installs what it needs.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned here only for this machine's local wheel; pyproject declares ranges.
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
# test processes (pytest-xdist); each file runs whole in one of them, so a module's fixtures are built once
TEST_WORKERS ?= 2

.PHONY: install test demo bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

test: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

demo: install
	bash scripts/get_data.sh
	$(BIN)/s2dnas demo

bench: install
	bash scripts/get_data.sh
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
