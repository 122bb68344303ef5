# Two entry points for a fresh machine: `make demo` and `make test` (see README).
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: install install-test system-deps demo test bench

install:
	$(PIP) install --quiet -e .

# System parts the tests run for real: InfluxDB 1.x (Debian's influxdb) and Node for the Flux checker.
SYSTEM_PACKAGES = $(if $(shell command -v influxd),,influxdb) $(if $(shell command -v npm),,nodejs npm)
system-deps:
	@if [ -n "$(strip $(SYSTEM_PACKAGES))" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
		else \
			echo "missing: $(SYSTEM_PACKAGES); run 'sudo apt-get install $(SYSTEM_PACKAGES)' (real-server tests skip without them)"; \
		fi; \
	fi

install-test: install system-deps
	$(PIP) install --quiet -e '.[test]'
	@if [ -f tests/flux_check/package-lock.json ] && command -v npm >/dev/null 2>&1; then \
		npm ci --silent --prefix tests/flux_check >/dev/null; \
	fi

# The bridge on the built-in simulated EEG stream (Ctrl-C stops both).
demo: install
	@eeg-bridge simulate --name SimEEG --channels 32 --rate 500 & sim=$$!; \
	trap 'kill $$sim 2>/dev/null; wait $$sim 2>/dev/null' EXIT INT TERM; \
	LSL_STREAM_NAME=SimEEG eeg-bridge run

test: install-test
	$(PYTHON) -m pytest

bench: install
	$(PIP) install --quiet -e '.[bench]'
	$(PYTHON) -m bench.run
