# Everything a newcomer needs: `make run` and `make test`. Only Python 3.11 is assumed.
# python3.11 where it exists under that name, else python3 (checked to be 3.11+ below).
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# tus-js-client for the end-to-end tests, run by the machine's Node.js (18+).
JS_STAMP := tests/js/node_modules/.installed
# matplotlib and py-spy for the benchmarks (the `bench` extra), installed only by the bench targets.
BENCH_STAMP := $(VENV)/.bench-installed
# Uppy and Swagger UI for the web page (GET /, /docs), copied from npm into web/vendor/: served by
# the server itself, never from a CDN.
WEB_STAMP  := web/vendor/.installed

.PHONY: install run test lint format bench bench-images bench-tus loadtest clean

install: $(STAMP) $(JS_STAMP) $(WEB_STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null || { echo "need Python 3.11+ (set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,lint,loadtest]'
	touch $(STAMP)

$(JS_STAMP): tests/js/package.json tests/js/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "need Node.js 18+ with npm on PATH (tus-js-client tests)"; exit 1; }
	npm ci --prefix tests/js --no-audit --no-fund --loglevel=error
	touch $(JS_STAMP)

# --ignore-scripts: no package's install script runs (one would phone home for statistics).
$(WEB_STAMP): web/package.json web/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "need Node.js 18+ with npm on PATH (the web page's Uppy)"; exit 1; }
	npm ci --prefix web --no-audit --no-fund --ignore-scripts --loglevel=error
	rm -rf web/vendor && mkdir -p web/vendor
	cp web/node_modules/uppy/dist/uppy.min.mjs web/node_modules/uppy/dist/uppy.min.css web/vendor/
	cp web/node_modules/uppy/LICENSE web/vendor/uppy-LICENSE.txt
	cp web/node_modules/swagger-ui-dist/swagger-ui-bundle.js web/node_modules/swagger-ui-dist/swagger-ui.css web/vendor/
	cp web/node_modules/swagger-ui-dist/LICENSE web/vendor/swagger-ui-LICENSE.txt
	touch $(WEB_STAMP)

run: install
	$(PY) -m server --config config.yaml

test: install
	$(PY) -m pytest -q

# ruff (lint and format check), mypy on the three packages, import-linter's layering contracts.
lint: install
	$(VENV)/bin/ruff check server chunks avatars tests loadtest
	$(VENV)/bin/ruff format --check server chunks avatars tests loadtest
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: install
	$(VENV)/bin/ruff check --fix server chunks avatars tests loadtest
	$(VENV)/bin/ruff format server chunks avatars tests loadtest

# The load and soak runs; the JSON chunk API against tus in the same shapes (tests/bench/chunk_api.py);
# W5, real photos against plain Pillow (tests/bench/photos.py); then W2 and W3 of bench-tus on local
# disk beside the S3 backend. Each is bounded by `timeout`.
bench: install $(BENCH_STAMP)
	$(PY) -m pytest -q -m bench -p no:randomly -s tests/bench
	BENCH_SCALE=$${BENCH_SCALE:-0.4} timeout 900 $(PY) -m tests.bench.chunk_api
	timeout 900 $(PY) -m tests.bench.photos
	BENCH_SERVERS="project project-s3" BENCH_WORKLOADS="W2 W3" BENCH_CHART=var/bench/s3-beside-local.png \
		$(PY) -m tests.bench.tus_compare

bench-images: install
	$(PY) -m tests.bench.images

# Locust, headless, against $(LOADTEST_URL) (empty: a local server with the embedded Redis on a
# free port, stopped after). LOADTEST_USERS, LOADTEST_SECONDS and the rest: docs/loadtest.md.
# Leaves report.html, CSVs and /metrics before and after under var/loadtest/.
loadtest: install
	$(PY) -m loadtest

# This server against @tus/server under one raw HTTP/1.1 driver (docs/performance.md); BENCH_SCALE=0.2
# for a quick look, BENCH_REPS (3: medians), BENCH_WORKLOADS="W1 W3". Rows: Node, this server, and this server with
# server.workers: 2 (BENCH_SERVERS to choose). Draws docs/bench-tus.png.
$(BENCH_STAMP): pyproject.toml | $(STAMP)
	$(PY) -m pip install -q -e '.[test,lint,loadtest,bench]'
	touch $(BENCH_STAMP)

bench-tus: install $(BENCH_STAMP)
	$(PY) -m tests.bench.tus_compare

clean:
	rm -rf $(VENV) var .pytest_cache
