# Two set-up commands: `make demo` and `make test`. Each creates .venv/ when it is missing and installs
# only when pyproject.toml changed since the last install, so a second run installs nothing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PIP := $(PY) -m pip install -q --disable-pip-version-check
export SPARK_LOCAL_IP := 127.0.0.1
export PYSPARK_PYTHON := $(abspath $(PY))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PY))

.PHONY: install system-deps demo test lint bench clean

install: $(STAMP) system-deps

# bubblewrap gives the traces sandbox its namespace layer; without it the sandbox falls back to the other
# layers (docs/traces.md). Installed when missing and we may (root with apt-get); never fatal.
system-deps:
	@command -v bwrap >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && { apt-get update -qq >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap \
	  >/dev/null 2>&1; } ; command -v bwrap >/dev/null 2>&1 || echo "note: bubblewrap not installed; the traces sandbox runs without its namespace layer"; }

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing into $(VENV) (the first run takes a few minutes; log: $(VENV)/install.log)"
	@# The CPU wheel of torch 2.13.0 lies on this machine; an unpinned torch would pull a CUDA build.
	@( $(PIP) --upgrade pip && $(PIP) torch==2.13.0 && $(PIP) -e '.[dev]' ) > $(VENV)/install.log 2>&1 \
	  || { tail -n 40 $(VENV)/install.log; echo "install failed: see $(VENV)/install.log"; exit 1; }
	@touch $(STAMP)

demo: install
	$(VENV)/bin/rnj sample --out out/demo/sample
	$(VENV)/bin/rnj run configs/demo.toml

test: install
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf out .pytest_cache
