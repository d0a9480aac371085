# Everything a newcomer needs: `make run` and `make test`. Only Python 3.11 is assumed.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install run test bench bench-images clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

run: install
	$(PY) -m server --config config.yaml

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) -m pytest -q -m bench -p no:randomly -s tests/bench

bench-images: install
	$(PY) -m tests.bench.images

clean:
	rm -rf $(VENV) var .pytest_cache
