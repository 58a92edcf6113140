# The kit's commands. Each one bootstraps what it needs first (Docker engine, debootstrap,
# the pinned toolchain in .venv, the test images): see scripts/bootstrap.sh.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
BIN := $(CURDIR)/.venv/bin
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PY_COLORS := 1
export ANSIBLE_FORCE_COLOR := 1

APP_SOURCES := app/pyproject.toml $(shell find app/src -name '*.py' 2>/dev/null)
WHEEL := app/dist/refapp-1.0.0-py3-none-any.whl

.PHONY: help bootstrap wheel demo demo-down bench test lint unit molecule

help:
	@echo "make demo       deploy the app onto a local systemd container; serves https://127.0.0.1:8443/"
	@echo "make demo-down  remove that container"
	@echo "make bench      after make demo: the stack against simpler ones, on the demo host (.cache/bench/)"
	@echo "make test       linters, unit tests, then molecule test (default, ssh, cluster and notes scenarios)"

bootstrap:
	@bash scripts/bootstrap.sh

$(WHEEL): $(APP_SOURCES) | bootstrap
	@echo "==> wheel: building $(WHEEL)"
	@rm -rf app/dist
	@$(BIN)/pip wheel -q --no-deps --wheel-dir app/dist ./app
	@test -f $(WHEEL) || { echo "wheel: expected $(WHEEL); is app/pyproject.toml's version 1.0.0?" >&2; exit 1; }

wheel: $(WHEEL)

demo: bootstrap wheel
	@bash scripts/demo.sh up

demo-down:
	@bash scripts/demo.sh down

# BENCH_ARGS: scripts/bench.py's options, e.g. BENCH_ARGS="--rounds 5 --deploys".
bench: bootstrap
	@python3 scripts/bench.py $(BENCH_ARGS)

REPORTS := .cache/test-results

# The summary (figures, failed tests, counts) is printed last, also when the unit tests or a
# scenario failed.
test: bootstrap wheel lint
	@status=0; $(MAKE) --no-print-directory unit || status=1; \
	$(MAKE) --no-print-directory molecule || status=1; \
	python3 scripts/test_summary.py $(REPORTS)/unit.xml $(REPORTS)/molecule-default.xml \
		$(REPORTS)/molecule-ssh.xml $(REPORTS)/molecule-cluster.xml $(REPORTS)/molecule-notes.xml || status=1; \
	exit $$status

lint:
	@echo "==> lint: yamllint, ansible-lint (production profile), ruff"
	yamllint --strict .
	ansible-lint
	ruff check .
	ruff format --check .

unit:
	@echo "==> unit: the app's tests and gunicorn_conf.py rendering"
	$(BIN)/pip install -q --no-deps -e ./app
	@mkdir -p $(REPORTS) && rm -f $(REPORTS)/unit.xml
	pytest -q app/tests tests/unit --junitxml=$(REPORTS)/unit.xml

molecule:
	@echo "==> molecule: two lanes side by side: default (Debian 12 and 13) then ssh (site.yml over"
	@echo "    SSH, no route to PyPI); cluster (a balancer and two app hosts) then notes (PostgreSQL)"
	@mkdir -p $(REPORTS) && rm -f $(REPORTS)/molecule-*.xml
	bash scripts/molecule.sh cluster,notes+default,ssh
