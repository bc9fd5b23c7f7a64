# Two entry points for a fresh machine:
#   make demo   set up .venv and run the whole GFRIEND pipeline on the built-in tiny model and data
#   make test   set up .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build of torch (it lies on these machines' disk). GPU users: see README.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test setup clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) run_pipeline.py --config configs/demo.yaml

test: setup
	$(PY) -m pytest tests -q

clean:
	rm -rf outputs/demo
