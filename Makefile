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

# System packages, installed when missing and we may (root with apt-get); never fatal:
# bubblewrap gives the traces sandbox its namespace layer (without it the sandbox falls back to its other
# layers, docs/traces.md); chromium renders the HTML report in its test (skipped without it).
SYSTEM_PACKAGES := bwrap:bubblewrap chromium:chromium
system-deps:
	@missing=""; for pair in $(SYSTEM_PACKAGES); do command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing system packages:$$missing"; apt-get update -qq >/dev/null 2>&1; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null 2>&1 \
	  || echo "note: could not install$$missing (tests that need them are skipped)"; fi

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
	$(VENV)/bin/rnj train configs/demo.toml --all
	$(VENV)/bin/rnj train configs/demo.toml --plot out/demo/training.png
	$(VENV)/bin/rnj export configs/demo.toml out/demo/hf --generate "def fibonacci(n):"
	@echo "demo outputs: sample corpus out/demo/sample, jobs out/demo/build/<job>, shards out/demo/build/build,"
	@echo "  training run out/demo/build/train (metrics.jsonl, checkpoints), curves out/demo/training.png,"
	@echo "  Hugging Face export out/demo/hf"

test: install
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf out .pytest_cache
