# The two commands of the README: `make demo` (install + the main job) and `make test` (install + tests).
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUT ?= demo-out

.PHONY: install demo test lint bench clean

install:
	@VENV=$(VENV) bash scripts/install.sh

demo: install
	$(BIN)/skyfuse demo --out $(DEMO_OUT)

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src

clean:
	rm -rf $(DEMO_OUT) .pytest_cache .mypy_cache .ruff_cache
