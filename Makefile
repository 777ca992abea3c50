# Cascade developer entry points.
#
#   make run     install system services + venv, start the local stack (Ctrl-C stops it);
#                then `.venv/bin/cascade scenario thermal_runaway --speed 20` (docs/demo.md)
#   make test    install system services + venv, run the test suite
#   make bench   run the benchmarks (python -m bench)
#   make soak    hours of the real pipeline with faults on a schedule, verdicts and a plot (docs/soak.md)
#   make stress  fleet size stepped up until the collector falls behind: the knee (docs/soak.md)
#   make check   promtool / amtool config checks, import contracts (import-linter), ruff, mypy
#   make mutate  mutation testing of the safety-critical modules (docs/testing.md)
#   make clean   remove local state (./var) and caches; `make distclean` also drops .venv
#
# Port overrides for `make run` (scripts/run-stack): INFLUX_PORT INFLUX_RPC_PORT PROM_PORT AM_PORT
# METRICS_PORT SIM_PORT SIM_CONTROL_PORT NOTIFY_PORT INBOX_PORT ISSUER_PORT MQTT_PORT MQTT_TLS_PORT
# INGEST_HTTPS_PORT INGEST_METRICS_PORT GATEWAY_METRICS_PORT
# (see README.md, "What runs where" and "Configuration"; scripts/run-stack --help).

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.cascade-installed

# Debian packages for the services the stack and the tests start themselves, with the
# binaries each provides: one list, scripts/deb-packages.
DEB_PACKAGES := $(shell awk '!/^[[:space:]]*(\#|$$)/ {print $$1}' scripts/deb-packages)
DEB_BINARIES := $(shell awk '!/^[[:space:]]*(\#|$$)/ {for (i = 2; i <= NF; i++) print $$i}' scripts/deb-packages)

.PHONY: help deps venv run run-services test bench soak stress check mutate clean distclean

help:
	@echo "Targets:"
	@echo "  make run           start InfluxDB, Prometheus, Alertmanager, notifier + local inbox, the simulated fleet"
	@echo "                     and the collector (demo: docs/demo.md)"
	@echo "  make run-services  start only InfluxDB, Prometheus and Alertmanager"
	@echo "  make test          run the test suite (.venv/bin/pytest -q)"
	@echo "  make bench         run the benchmarks (.venv/bin/python -m bench)"
	@echo "  make soak          2 h of the real pipeline with faults, verdicts, CSV/JSON/PNG in var/soak/"
	@echo "                     (SOAK_ARGS=\"--duration 20m --cabinets 50\"; docs/soak.md)"
	@echo "  make stress        step the fleet up (100..1600 cabinets) and report the knee (STRESS_ARGS=...)"
	@echo "  make check         promtool/amtool config checks; import-linter contracts, ruff and mypy"
	@echo "  make fuzz-api      schemathesis against /api/v1's OpenAPI document (FUZZ_EXAMPLES=200 per operation)"
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

# Not part of `make test`: long runs. The soak's plot needs matplotlib, pinned apart so the tests do not.
soak: deps venv
	$(VENV)/bin/python -m pip install --quiet -c constraints.txt -r scripts/soak-requirements.txt
	$(VENV)/bin/python -m bench soak $(SOAK_ARGS)

stress: deps venv
	$(VENV)/bin/python -m bench stress $(STRESS_ARGS)

check: deps venv
	@bash scripts/check-configs

# A longer schemathesis run against /api/v1's OpenAPI document than the one in `make test` (docs/api.md).
.PHONY: fuzz-api
fuzz-api: deps venv
	CASCADE_FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-200} $(VENV)/bin/pytest -q -s tests/test_api_v1_fuzz.py

# Not part of `make test`: run it before resolving an issue that touches a safety-critical module.
mutate: deps venv
	bash scripts/mutate $(MUTATE_ARGS)

# Not part of `make test`: regenerate the PyBaMM validation cells (tests/health_cases/pybamm) in their own
# venv and check the battery-health estimators against them (docs/battery-health.md, "Validation").
.PHONY: health-validate
health-validate: venv
	test -x var/pybamm-venv/bin/python || python3 -m venv var/pybamm-venv
	var/pybamm-venv/bin/python -m pip install --quiet -r health/validation/requirements.txt
	var/pybamm-venv/bin/python -m health.validation.pybamm_cells
	$(VENV)/bin/python -m health.validation.check

clean:
	rm -rf var .pytest_cache .hypothesis build
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) *.egg-info
