# corral developer entry points. Each target installs what it needs, so a
# fresh clone needs only python3 (>= 3.11) and network access to PyPI.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
DEMO_WORKERS ?= 4

.PHONY: help venv system-packages lint test unit integration demo bench bench-quick clean
.PHONY: venv-ft venv-ft314 test-ft bench-packages

help:
	@echo "make demo   - run corral on examples/hello.py with $(DEMO_WORKERS) workers"
	@echo "make test   - create/update the venv, lint, and run the whole test suite"
	@echo "make lint   - ruff and mypy --strict"
	@echo "make bench  - corral vs its peers (~15 min); writes BENCHMARKS.md and docs/img/*.png"
	@echo "make bench-quick - a ~60 s subset of make bench, printed (run it before a release)"
	@echo "make test-ft - the test suite on a free-threaded CPython (built on first use)"
	@echo "make reliability - the reliability scenarios; writes RELIABILITY.md"
	@echo "make soak   - the 30-minute soak (never part of make test)"
	@echo "make assets - regenerate the dashboard JSON, the alert rules and the Kubernetes copies"
	@echo "make lock   - re-pin the Docker image's requirements from pyproject.toml"

# Re-install whenever pyproject.toml changes; the stamp records the last install.
# Development dependencies are PEP 735 groups in pyproject.toml, hence the pip
# upgrade first (`--group` needs pip >= 25.1). The reload extra (watchfiles) is
# here so this lane tests --reload on it; the free-threaded lane tests the
# stat poller that replaces it. Likewise otlp-grpc (grpcio): this lane exports
# over gRPC, the free-threaded lane tests that gRPC is refused there.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[reload,otlp-grpc]' --group test --group lint --group assets --group compat
	@touch $(STAMP)

venv: $(STAMP)

# promtool and chromium, through apt-get when they are missing.
system-packages:
	@bash scripts/system-packages.sh

lint: venv
	$(BIN)/ruff check src tests examples bench
	$(BIN)/ruff format --check src tests examples bench
	$(BIN)/mypy

test: lint system-packages
	$(BIN)/pytest $(PYTEST_ARGS)

unit: venv
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: venv system-packages
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

demo: venv
	@echo "corral demo: app on http://127.0.0.1:8000, status page and /metrics on http://127.0.0.1:9180"
	$(BIN)/corral run examples.hello:app --workers $(DEMO_WORKERS) --log-format console

# --- Benchmarks (issue 7; never part of `make test`) -------------------------
# The peers and matplotlib come from the `bench` group, installed into the main
# venv on top of test and lint; wrk from apt (scripts/system-packages.sh wrk=wrk); the
# free-threaded section uses $(FT_VENV).
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[reload]' --group test --group lint --group bench
	@touch $(BENCH_STAMP)

bench-packages:
	@bash scripts/system-packages.sh wrk=wrk valgrind=valgrind

# 3.14t rows are added to section 7 when `make venv-ft314` succeeds; where this
# machine cannot provide a CPython 3.14 the bench goes on without them.
bench: $(BENCH_STAMP) venv-ft bench-packages
	@mkdir -p build && $(MAKE) --no-print-directory venv-ft314 >build/venv-ft314.log 2>&1 \
		|| echo "bench: no free-threaded CPython 3.14 here (build/venv-ft314.log: $$(grep -m1 -e '^E: ' -e 'error:' build/venv-ft314.log)); section 7 goes without 3.14t rows"
	$(BIN)/python -m bench.run --output BENCHMARKS.md --plots docs/img

bench-quick: $(BENCH_STAMP) venv-ft bench-packages
	$(BIN)/python -m bench.run --quick

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
	rm -rf $(FT_VENV) $(FT314_VENV)

# --- The free-threaded lane ----------------------------------------------------
# scripts/free-threaded-python.sh finds or builds a free-threaded CPython
# (python3.14t/python3.13t on PATH, else a cached build under
# $${CORRAL_FT_PREFIX:-~/.cache/corral/python3.13t}) and prints its path.
FT_VENV ?= .venv-ft
FT_BIN := $(FT_VENV)/bin
FT_STAMP := $(FT_VENV)/.installed

$(FT_STAMP): pyproject.toml scripts/free-threaded-python.sh
	@$(FT_BIN)/python -c '' 2>/dev/null \
		|| { py="$$(scripts/free-threaded-python.sh)" && "$$py" -m venv --clear $(FT_VENV); }
	$(FT_BIN)/python -m pip install --quiet --upgrade pip
	$(FT_BIN)/python -m pip install --quiet -e . --group test
	@touch $(FT_STAMP)

venv-ft: $(FT_STAMP)

# CPython 3.14t for the bench only (corral and its runtime dependencies): the
# same script, from Debian forky's python3.14 source package.
FT314_VENV ?= .venv-ft314
FT314_STAMP := $(FT314_VENV)/.installed

$(FT314_STAMP): pyproject.toml scripts/free-threaded-python.sh
	@$(FT314_VENV)/bin/python -c '' 2>/dev/null \
		|| { py="$$(CORRAL_FT_VERSION=3.14 scripts/free-threaded-python.sh)" \
			&& "$$py" -m venv --clear $(FT314_VENV); }
	$(FT314_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(FT314_VENV)/bin/python -m pip install --quiet -e .
	@touch $(FT314_STAMP)

venv-ft314: $(FT314_STAMP)

# The GIL must still be off after importing corral and the example apps, and
# EXPECT_FREE_THREADED makes the suite assert it runs with thread workers.
test-ft: venv-ft system-packages
	$(FT_BIN)/python scripts/check_gil.py
	EXPECT_FREE_THREADED=1 $(FT_BIN)/pytest $(PYTEST_ARGS)

# --- Operator assets (issue 5) ---------------------------------------------------
# The dashboard JSON, the alert rules (from their template, with runbook links
# under $RUNBOOK_BASE_URL, default docs/runbooks.md on GitHub) and the
# Kubernetes copies of both are generated; tests/assets fails when a committed
# copy is stale.
.PHONY: assets
assets: venv
	$(BIN)/python scripts/build_dashboard.py
	$(BIN)/python scripts/build_rules.py
	$(BIN)/python scripts/build_kubernetes.py

# The Docker image's pinned requirements (deploy/docker/requirements.txt),
# resolved by pip for the image's Python (python3.X as the Dockerfile's FROM
# says; PYTHON_IMAGE=/path/to/python3.X to choose one). Needs PyPI;
# tests/packaging checks the result against pyproject.toml offline.
.PHONY: lock
lock: venv
	$(BIN)/python scripts/lock_image.py $(if $(PYTHON_IMAGE),--python $(PYTHON_IMAGE))

# --- Reliability evidence (issue 6) ----------------------------------------------
# `make reliability` runs the scenario suite (tests/reliability; each scenario
# appends a JSON line to .reliability/results.jsonl) and renders RELIABILITY.md
# from it (plus the last soak's rows, if any), even when a scenario failed,
# then fails if any did. `make soak` runs the long soak (CORRAL_SOAK_SECONDS,
# default 1800) into .reliability/soak.jsonl; `make test` never runs it.
.PHONY: reliability soak
RELIABILITY_RESULTS ?= .reliability/results.jsonl
SOAK_RESULTS ?= .reliability/soak.jsonl

reliability: venv
	CORRAL_RELIABILITY_RESULTS=$(RELIABILITY_RESULTS) $(BIN)/pytest tests/reliability $(PYTEST_ARGS); \
		status=$$?; \
		$(BIN)/python scripts/reliability_report.py --results $(RELIABILITY_RESULTS) \
			--soak $(SOAK_RESULTS) --command "make reliability" && exit $$status

soak: venv
	CORRAL_RELIABILITY_RESULTS=$(SOAK_RESULTS) $(BIN)/pytest tests/reliability -m soak $(PYTEST_ARGS)
	@echo "soak results in $(SOAK_RESULTS); make reliability puts them in RELIABILITY.md"
