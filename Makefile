# Two entry points (see README): `make run` and `make test`. `make run` (and
# `make venv`) creates the virtualenv from requirements.txt, what the server
# runs; `make test` (and `make dev-venv`) adds requirements-dev.txt, the test
# suite and the tools. Each file has its own stamp, so either works first in a
# fresh clone and a changed file is installed again.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
STAMP := $(VENV)/.installed-requirements
DEV_STAMP := $(VENV)/.installed-requirements-dev

.PHONY: run serve test lint venv dev-venv

venv: $(STAMP)

dev-venv: $(DEV_STAMP)

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt
	touch $(STAMP)

$(DEV_STAMP): requirements-dev.txt $(STAMP)
	$(PIP) -r requirements-dev.txt
	touch $(DEV_STAMP)

# The main job on the embedded SQLite default: demo data, a local SMTP sink,
# the scheduler until the queue is empty, a report.
run: export DEBUG ?= 1
run: $(STAMP)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py demo

# The admin (and later the API) on http://127.0.0.1:8000/.
serve: export DEBUG ?= 1
serve: $(STAMP)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py runserver 127.0.0.1:8000

# The browser test drives Debian's Chromium; installed here when missing.
CHROMIUM ?= /usr/bin/chromium

$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "the dashboard browser test needs Chromium at $(CHROMIUM) (set CHROMIUM=/path/to/chromium)"; exit 1; }
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y --no-install-recommends chromium \
	  || { $(if $(filter 0,$(shell id -u)),,sudo) apt-get update && $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y --no-install-recommends chromium; }

# Clock-skew tests run scheduler processes under Debian's libfaketime.
LIBFAKETIME ?= /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1

$(LIBFAKETIME):
	@command -v apt-get >/dev/null || { echo "the clock-skew tests need libfaketime at $(LIBFAKETIME) (set LIBFAKETIME=/path)"; exit 1; }
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y --no-install-recommends faketime \
	  || { $(if $(filter 0,$(shell id -u)),,sudo) apt-get update && $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y --no-install-recommends faketime; }

# The Prometheus alert rules are unit-tested with Debian's promtool (package prometheus).
PROMTOOL ?= /usr/bin/promtool

$(PROMTOOL):
	@command -v apt-get >/dev/null || { echo "the alert rule tests need promtool at $(PROMTOOL) (set PROMTOOL=/path)"; exit 1; }
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y --no-install-recommends prometheus \
	  || { $(if $(filter 0,$(shell id -u)),,sudo) apt-get update && $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y --no-install-recommends prometheus; }

# The test suite; set DATABASE_URL=postgres://... to run it on PostgreSQL.
test: export CHROMIUM_PATH = $(CHROMIUM)
test: export LIBFAKETIME_PATH = $(LIBFAKETIME)
test: export PROMTOOL_PATH = $(PROMTOOL)
test: $(DEV_STAMP) $(CHROMIUM) $(LIBFAKETIME) $(PROMTOOL)
	$(VENV)/bin/pytest

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
