# The two set-up commands in the README: `make demo` and `make test`.
# Both create the virtualenv themselves (Python 3.11) and install the project into it.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SYSTEM_TOOLS := espeak-ng bspatch xdelta3 mosquitto chromium chromedriver

export TF_CPP_MIN_LOG_LEVEL := 2
export TF_ENABLE_ONEDNN_OPTS := 0

.PHONY: demo test lint bench clean system-tools

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[server,agent,dev]'
	touch $(STAMP)

# Debian programs the tests use as interop peers (bspatch, xdelta3) and data source (espeak-ng).
# Installed only when missing and only when we are root with apt (CI and dev machines here).
system-tools:
	@missing=""; for t in $(SYSTEM_TOOLS); do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages for:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng bsdiff xdelta3 mosquitto chromium chromium-driver >/dev/null; \
	  else echo "missing:$$missing (install espeak-ng bsdiff xdelta3 mosquitto chromium chromium-driver)"; fi; \
	fi

demo: $(STAMP) system-tools
	$(VENV)/bin/tinyfleet demo

test: $(STAMP) system-tools
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
