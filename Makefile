# Cascade developer entry points.
#
#   make run     install system services + venv, start the local stack (Ctrl-C stops it);
#                then `.venv/bin/cascade scenario thermal_runaway --speed 20` (docs/demo.md)
#   make test    install system services + venv, run the test suite
#   make bench   run the benchmarks (python -m bench)
#   make check   promtool / amtool config checks, import contracts (import-linter), ruff, mypy
#   make mutate  mutation testing of the safety-critical modules (docs/testing.md)
#   make clean   remove local state (./var) and caches; `make distclean` also drops .venv
#
# Port overrides for `make run`: INFLUX_PORT PROM_PORT AM_PORT METRICS_PORT SIM_PORT SIM_CONTROL_PORT
# NOTIFY_PORT INBOX_PORT
# (see README.md, "What runs where").

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.cascade-installed

# Debian packages for the services the stack and the tests start themselves, with the
# binaries each provides: one list, scripts/deb-packages.
DEB_PACKAGES := $(shell awk '!/^[[:space:]]*(\#|$$)/ {print $$1}' scripts/deb-packages)
DEB_BINARIES := $(shell awk '!/^[[:space:]]*(\#|$$)/ {for (i = 2; i <= NF; i++) print $$i}' scripts/deb-packages)

.PHONY: help deps venv run run-services test bench check mutate clean distclean

help:
	@echo "Targets:"
	@echo "  make run           start InfluxDB, Prometheus, Alertmanager, notifier + local inbox, the simulated fleet"
	@echo "                     and the collector (demo: docs/demo.md)"
	@echo "  make run-services  start only InfluxDB, Prometheus and Alertmanager"
	@echo "  make test          run the test suite (.venv/bin/pytest -q)"
	@echo "  make bench         run the benchmarks (.venv/bin/python -m bench)"
	@echo "  make check         promtool/amtool config checks; import-linter contracts, ruff and mypy"
	@echo "  make mutate        mutation testing of the safety-critical modules (MUTATE_ARGS=\"engine spool\" for a subset;"
	@echo "                     docs/testing.md)"
	@echo "  make deps          apt-get install $(DEB_PACKAGES) (only if a binary is missing)"
	@echo "  make venv          create .venv and install the project with [test] extras"
	@echo "  make clean         remove ./var and caches (distclean: also .venv)"

deps:
	@bash scripts/install-deps scripts/deb-packages

# Re-run pip only when the dependency declarations change (or the venv is new).
venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -c constraints.txt -e '.[test]'
	@touch $@

run: deps venv
	bash scripts/run-stack

run-services: deps venv
	bash scripts/run-stack --services-only

test: deps venv
	$(VENV)/bin/pytest -q

bench: deps venv
	$(VENV)/bin/python -m bench $(BENCH_ARGS)

check: deps venv
	@bash scripts/check-configs

# Not part of `make test`: run it before resolving an issue that touches a safety-critical module.
mutate: deps venv
	bash scripts/mutate $(MUTATE_ARGS)

clean:
	rm -rf var .pytest_cache .hypothesis build
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) *.egg-info
