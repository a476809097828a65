# `make run` and `make test` both create .venv on first use and install the pinned
# requirements; the install is repeated only when a requirements file changes.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test test-fast bench clean chromium promtool

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: requirements.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(PY) run.py

# The whole suite in TEST_WORKERS processes (pytest-xdist), each taking a whole file at a time
# (module-shared hubs stay shared): most of a test's time is a hub starting, a consumer group
# joining or a peer answering, not CPU, so a two-core machine runs three at once.
TEST_WORKERS ?= 3
test: $(VENV)/.installed-dev chromium promtool
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The tests that need no broker, database server or process of their own (markers
# `services` and `slow`, tests/conftest.py): domain rules, settings, channels against local
# fakes, the realtime fan-out on Redis. About a minute, for the edit-test loop.
test-fast: $(VENV)/.installed-dev
	$(PY) -m pytest -m "not services and not slow" $(PYTEST_ARGS)

# tests/test_web_browser.py drives the distribution's Chromium. Installed here when it is
# missing and can be (root with apt-get); if it still is not there, those tests are skipped
# and say why.
CHROMIUM_FOUND = $(or $(HUB_TEST_CHROMIUM),$(wildcard /usr/lib/chromium/chromium),$(shell command -v chromium || command -v chromium-browser || command -v google-chrome))
chromium:
ifeq ($(CHROMIUM_FOUND),)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "make: installing chromium (apt-get) for the browser tests"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 \
	    || echo "make: could not install chromium: the browser tests will be skipped"; \
	else \
	  echo "make: no chromium here and no apt-get as root to install it: the browser tests will be skipped"; \
	fi
endif

# tests/test_alerting.py runs promtool (Debian's prometheus package) on deploy/prometheus.
# Installed the same way; without it those tests are skipped and say why.
promtool:
ifeq ($(shell command -v promtool),)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "make: installing prometheus (apt-get) for promtool"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } >/dev/null 2>&1 \
	    || echo "make: could not install prometheus: the promtool tests will be skipped"; \
	else \
	  echo "make: no promtool here and no apt-get as root to install it: the promtool tests will be skipped"; \
	fi
endif

bench: $(VENV)/.installed-dev
	$(PY) bench/auth_bench.py
	$(PY) bench/orders.py
	$(PY) bench/webhooks.py
	$(PY) bench/notify.py

clean:
	rm -rf $(VENV)
