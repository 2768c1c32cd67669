# Two entry points (see README): `make study` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= cpu3
STUDY_ARGS ?=  # e.g. --no-reuse (train from scratch instead of reusing the committed runs), --dry-run
WORKERS ?= 2  # runs side by side (each run uses the profile's num_threads)
export MPLBACKEND := agg

.PHONY: setup study test data bench clean-smoke

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[test]'
	touch $@

setup: $(VENV)/.installed

# Run the whole study (all notebooks, in order) on PROFILE (default: cpu3, the reference study).
study: setup
	$(PY) -m anira.study --profile $(PROFILE) --executor local --workers $(WORKERS) $(STUDY_ARGS)

# Unit tests + every notebook executed by nbval on its default (smoke) parameters. As root on
# Debian/Ubuntu, tests/test_slurm.py also brings up a local Slurm (scripts/slurm_local.sh) and runs
# the study's Slurm executor on it; elsewhere those tests are skipped, saying why.
test: setup
	$(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env -p no:cacheprovider

# Regenerate the frozen evaluation sets under data/ (byte-identical to the committed ones).
data: setup
	$(PY) -m anira.data

bench: setup
	$(PY) -m anira.bench
