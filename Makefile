# Two commands matter: `make demo` and `make test` (README, "Quick start").
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
KINESALITE := tests/support/kinesalite
comma := ,
WHEELS := .wheels

.PHONY: demo test lint unit integration e2e pg-versions bench clean

# The dependencies are resolved from the package index once, into a wheelhouse (WHEELS), and installed from it:
# tests/deploy/test_install.py installs the built wheel as the README says, into a fresh virtualenv, from the
# same wheels (a resolution from the index again took it up to two minutes).
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip wheel -q -w $(WHEELS) '.[dev]'
	$(BIN)/pip download -q -d $(WHEELS) 'setuptools>=77' wheel
	rm -f $(WHEELS)/cdcstream-*.whl
	$(BIN)/pip install -q --no-index --find-links $(WHEELS) -e '.[dev]'
	touch $@

$(KINESALITE)/node_modules/.installed: $(KINESALITE)/package-lock.json
	npm ci --prefix $(KINESALITE) --no-audit --no-fund --loglevel=error
	touch $@

demo: $(BIN)/.installed
	$(BIN)/python scripts/demo.py

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/mypy

# The whole suite: lint, unit, integration (private PostgreSQL + moto + kinesalite), end-to-end; beside it (their
# servers mostly wait, and CI has 30 minutes) the PostgreSQL source's core on the other versions (pg-versions),
# whose output follows the suite's. Either failing fails the target.
test: lint $(KINESALITE)/node_modules/.installed
	$(BIN)/python -m tests.support.pg_binaries $(subst $(comma), ,$(PG_VERSIONS))
	@log=$$(mktemp); \
	$(PG_CORE) $(PYTEST_ARGS) > $$log 2>&1 & versions=$$!; \
	$(BIN)/pytest $(PYTEST_ARGS); suite=$$?; \
	wait $$versions; other=$$?; \
	echo "--- the PostgreSQL source's core on PostgreSQL $(PG_VERSIONS) (run beside the suite):"; \
	cat $$log; rm -f $$log; \
	exit $$(( suite || other ))

unit: $(BIN)/.installed
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

# One kind of test (markers set by directory, tests/conftest.py); servers are started by the fixtures.
integration: $(BIN)/.installed $(KINESALITE)/node_modules/.installed
	$(BIN)/pytest -m integration $(PYTEST_ARGS)

e2e: $(BIN)/.installed $(KINESALITE)/node_modules/.installed
	$(BIN)/pytest -m e2e $(PYTEST_ARGS)

# The PostgreSQL source's core (tests marked pg_core) on the other supported server versions; `make test` runs
# everything on 15. The binaries are fetched first (tests/support/pg_binaries.py), so a registry that cannot be
# reached fails here, plainly. The Kinesis-API servers do not depend on the PostgreSQL version: moto only.
PG_VERSIONS ?= 14,16,17,18
PG_CORE = $(BIN)/pytest -m pg_core --pg-versions $(PG_VERSIONS) -k "not kinesalite"
pg-versions: $(BIN)/.installed $(KINESALITE)/node_modules/.installed
	$(BIN)/python -m tests.support.pg_binaries $(subst $(comma), ,$(PG_VERSIONS))
	$(PG_CORE) $(PYTEST_ARGS)

bench: $(BIN)/.installed
	$(BIN)/python bench/pg_e2e_bench.py

# Stops a PostgreSQL a killed demo left running (its data directory is under .demo/), then removes everything.
clean:
	if [ -x $(BIN)/python ]; then $(BIN)/python scripts/demo.py --stop; fi
	rm -rf $(VENV) $(WHEELS) .demo .tmp dist build $(KINESALITE)/node_modules
