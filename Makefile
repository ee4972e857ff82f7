# Two commands for a fresh machine: `make demo` (synth -> ingest -> stops by state, year, race ->
# the headline TWFE logit of troopers' Hispanic-vs-White stops with score-bootstrap inference)
# and `make test`. Both create .venv and install the pinned dependencies themselves. Tests run in two
# processes with one BLAS and one polars thread each (the machine has 2 cores; more threads only contend).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO   ?= demo-output

.PHONY: demo test lint bench lock clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-compile --disable-pip-version-check -c requirements.lock -e '.[dev]'
	# byte-compile on every core at once (pip compiles file by file); without .pyc files, every test
	# process would compile its imports from source (this environment sets PYTHONDONTWRITEBYTECODE)
	$(PY) -m compileall -q -j 0 $(VENV)/lib src > /dev/null
	touch $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO)
	$(VENV)/bin/stopdisparity synth $(DEMO)/raw --rows 400000 --seed 20240601
	$(VENV)/bin/stopdisparity ingest $(DEMO)/raw/*.csv.zip --store $(DEMO)/store
	$(VENV)/bin/stopdisparity summary --store $(DEMO)/store
	$(VENV)/bin/stopdisparity did --store $(DEMO)/store --agency "NC State Highway Patrol" \
		--agency "SC Highway Patrol" --inference score

test: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 POLARS_MAX_THREADS=1 $(PY) -m pytest -n 2 --dist loadgroup -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

bench: $(STAMP)
	$(PY) bench/ingest.py

lock: $(STAMP)
	$(PY) -m pip freeze --exclude-editable | grep -vi '^stopdisparity' > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf $(VENV) $(DEMO) build dist .pytest_cache .ruff_cache
