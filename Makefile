# Two entry points for a fresh machine: `make demo` and `make test` (see README).
# Everything is installed into a project virtual environment (.venv) made with whatever `python3`
# is on PATH: Debian 12 / Ubuntu 24.04 refuse `pip install` into the system Python (PEP 668).
PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
# PYTHONWARNINGS: setuptools' notes about editable installs are not for the people running make.
PIP := PYTHONWARNINGS=ignore $(VPY) -m pip

.PHONY: install install-test system-deps demo test bench

$(VPY):
	@$(PYTHON) -m venv $(VENV) >/dev/null 2>&1 || { rm -rf $(VENV); \
		echo "cannot create $(VENV) with '$(PYTHON) -m venv': on Debian/Ubuntu run 'sudo apt-get install python3-venv' (or 'sudo make system-deps')"; \
		exit 1; }
	@$(PIP) install --quiet --upgrade pip

install: $(VPY)
	@$(PIP) install --quiet -e .
	@echo "eeg-bridge is installed in $(VENV): run '$(VENV)/bin/eeg-bridge --help', or '. $(VENV)/bin/activate' first"

# System parts the tests run for real: InfluxDB 1.x (Debian's influxdb), Node for the Flux checker,
# Chromium and its driver for the live page, Prometheus (with promtool) for the alert rules, and
# python3-venv where the distribution splits it off.
SYSTEM_PACKAGES = $(if $(shell command -v influxd),,influxdb) $(if $(shell command -v npm),,nodejs npm) \
	$(if $(wildcard /usr/bin/chromium),,chromium) $(if $(wildcard /usr/bin/chromedriver),,chromium-driver) \
	$(if $(shell command -v prometheus),,prometheus) \
	$(if $(shell $(PYTHON) -c 'import ensurepip' 2>/dev/null && echo ok),,python3-venv)
system-deps:
	@if [ -n "$(strip $(SYSTEM_PACKAGES))" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
		else \
			echo "missing: $(SYSTEM_PACKAGES); run 'sudo apt-get install $(strip $(SYSTEM_PACKAGES))' (real-server and browser tests skip without them)"; \
		fi; \
	fi

install-test: system-deps install
	@$(PIP) install --quiet -e '.[test]'
	@if [ -f tests/flux_check/package-lock.json ] && command -v npm >/dev/null 2>&1; then \
		npm ci --silent --prefix tests/flux_check >/dev/null; \
	fi

# The simulator, the bridge and the live page (plus a private InfluxDB if influxd is installed);
# it prints the page's URL first. Ctrl-C stops everything it started.
demo: install
	@$(VENV)/bin/eeg-bridge demo

test: install-test
	$(VPY) -m pytest

bench: install
	@$(PIP) install --quiet -e '.[bench]'
	$(VPY) -m bench.run
