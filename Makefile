# schedctl — two commands do everything on a fresh Debian bookworm machine (as root):
#   make demo   run the hourly tier on examples/suite with the embedded config.yaml
#   make test   install what the tests need (docker, test image, prometheus, alertmanager, slurm,
#               chromium, torch CPU) and run lint, types and the whole test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
TORCH_VERSION ?= 2.13.0
PYTEST_ARGS ?=

.PHONY: demo test venv image engines lint typecheck unit bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

image:
	bash scripts/ensure-docker.sh
	bash scripts/build-image.sh

# The demo prefers Docker (runner: auto) and says so when it falls back to a local run.
demo: venv
	@if bash scripts/ensure-docker.sh && bash scripts/build-image.sh; then \
	  echo "demo: Docker engine and image ready: the hourly tier runs in a hardened container"; \
	else \
	  echo "demo: no Docker engine here: the hourly tier runs as a local process"; \
	fi
	SCHEDCTL_STATE_DIR=$${SCHEDCTL_STATE_DIR:-.schedctl} $(VENV)/bin/schedctl --config config.yaml schedule
	@# allow_root (unsafe): a root demo's local runs keep root, as nobody may not reach a clone under /root
	SCHEDCTL_STATE_DIR=$${SCHEDCTL_STATE_DIR:-.schedctl} SCHEDCTL_LOCAL_ALLOW_ROOT=$${SCHEDCTL_LOCAL_ALLOW_ROOT:-true} \
	  $(VENV)/bin/schedctl --config config.yaml run hourly
	SCHEDCTL_STATE_DIR=$${SCHEDCTL_STATE_DIR:-.schedctl} $(VENV)/bin/schedctl --config config.yaml runs --limit 5

# Everything the integration tests need; under CI=true a failure here fails the run.
engines: venv
	bash scripts/ensure-docker.sh
	bash scripts/build-image.sh
	bash scripts/ensure-prometheus.sh
	bash scripts/ensure-alertmanager.sh
	bash scripts/ensure-slurm.sh
	bash scripts/ensure-chromium.sh
	bash scripts/ensure-postgres.sh --check
	$(PY) -c 'import torch' 2>/dev/null || $(PIP) install --quiet torch==$(TORCH_VERSION)

lint: venv
	$(VENV)/bin/ruff check scheduler runners tests bench
	$(VENV)/bin/ruff format --check scheduler runners tests bench

typecheck: venv
	$(VENV)/bin/mypy --strict scheduler runners

unit: venv
	$(VENV)/bin/pytest -m 'not docker and not prometheus and not slow and not gpu' $(PYTEST_ARGS)

test: engines lint typecheck
	$(VENV)/bin/pytest -m 'not gpu' -p no:cacheprovider --durations=25 $(PYTEST_ARGS)

# Every bench/bench_*.py, each under BENCH_TIMEOUT, all in under 10 minutes (the arguments below
# trim repetitions, never the workload a figure names); ends with the figure lines together.
# schedctl's own bytecode is compiled first, as a non-editable install has it (where
# PYTHONDONTWRITEBYTECODE is set, an editable one would recompile it in every process timed).
# The 1M-result store is built once into $(BENCH_CACHE) by bench_history (through the real write
# path), reused by bench_history_engines and bench_web, and kept for the next `make bench`: its
# name carries a key of the generator, the schema version and scheduler/store's source, so any
# change there builds it again (`make bench BENCH_CACHE=$$(mktemp -d)` always builds).
BENCH_TIMEOUT ?= 240
BENCH_CACHE ?= .bench-cache
bench: venv
	@$(PY) -m compileall -q scheduler runners
	@set -o pipefail; start=$$(date +%s); failed=""; : > .bench.out; \
	for b in bench/bench_*.py; do \
	  case $$b in \
	    */bench_cli.py|*/bench_local.py) args="-n 5" ;; \
	    */bench_docker.py|*/bench_slurm.py) args="-n 3" ;; \
	    */bench_plugin.py) args="--pairs 12 --fixed-pairs 5" ;; \
	    */bench_fire_lag.py) args="--seconds 15" ;; \
	    */bench_restart.py) args="--cycles 4" ;; \
	    */bench_history.py|*/bench_history_engines.py|*/bench_web.py) args="--cache $(BENCH_CACHE)" ;; \
	    *) args="" ;; \
	  esac; \
	  echo "== $$b $$args ($$(( $$(date +%s) - start )) s so far)"; \
	  timeout $(BENCH_TIMEOUT) $(PY) $$b $$args 2>&1 | tee -a .bench.out \
	    || failed="$$failed $$b"; \
	done; \
	echo "== figures ($$(( $$(date +%s) - start )) s in all)"; \
	grep -E ' (OK|MISSED)$$' .bench.out || true; rm -f .bench.out; \
	if [ -n "$$failed" ]; then echo "bench scripts that failed:$$failed"; exit 1; fi

clean:
	rm -rf .schedctl .pytest_cache .mypy_cache .ruff_cache
