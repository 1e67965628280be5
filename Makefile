# crm-triggers developer commands. `make demo` and `make test` set everything up first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.setup-stamp

.PHONY: setup demo test lint format bench bench-quick bench-report clean

setup: $(STAMP)

# Re-run the install only when the dependency list changes.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: setup
	$(BIN)/crm-triggers demo

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Every benchmark, in order, on this machine (about 10 minutes on 2 cores plus the scale step
# with its 1M-customer runs; see bench/README.md), then one table of all figures (bench.report):
# printed, in bench/results/latest.json and at the top of BENCHMARKS.md. A failing step does
# not stop the others; the report flags rows not refreshed by this run, and make fails at the end.
BENCH_STEPS := replay_throughput scale worker_throughput naive_faust worker_latency quality webhook_outage

bench: setup
	@since=$$(date -u +%Y-%m-%dT%H:%M:%SZ); failed=""; \
	for step in $(BENCH_STEPS); do \
		echo "== python -m bench.$$step" >&2; \
		$(BIN)/python -m bench.$$step || failed="$$failed $$step"; \
	done; \
	$(BIN)/python -m bench.report --since $$since || failed="$$failed report"; \
	if [ -n "$$failed" ]; then echo "make bench: failed:$$failed" >&2; exit 1; fi

# Smoke run, no broker, about 20 s: small streams, writes results/quick.json and
# results/quality-quick.json only (not the report).
bench-quick: setup
	$(BIN)/python -m bench.replay_throughput --quick
	$(BIN)/python -m bench.quality --quick

# Rebuild the combined table from the results already in bench/results/.
bench-report: setup
	$(BIN)/python -m bench.report

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
