# Every target bootstraps .venv on first use; nothing needs to be installed by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.emobench-installed

.PHONY: test demo bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev]'
	touch $(STAMP)

# Two pytest-xdist workers (the suite is sized for 2 cores; much of it waits on subprocesses, Slurm jobs and
# the virtual device). Tests marked xdist_group share a worker. TEST_WORKERS=0 runs it in this one process.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$rc

demo: $(STAMP)
	$(BIN)/emobench demo

bench: $(STAMP)
	$(BIN)/python -m bench

# ruff (style, bugs), import-linter (the layer order in pyproject.toml), mypy (types of all non-test code)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy .

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
