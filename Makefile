# The LLMOps Handbook. Two commands do everything on a fresh machine:
#   make book   build the executed book (every chapter run against the real model) into book/_build/html
#   make test   the same set-up and book, then every test (pytest, nbval over labs and runbooks, runbook runs)
SHELL := bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# One home for the model, engine logs and runbook runs, shared by the book, the tests and the runbooks.
export LLMOPS_HOME ?= $(CURDIR)/.llmops
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help setup vllm book test browser bench clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

setup: $(VENV)/.installed  ## create .venv with the library, llama.cpp, the model and the book toolchain

$(VENV)/.installed: pyproject.toml scripts/setup_env.sh scripts/vendor_web_assets.sh book/package.json book/package-lock.json
	VENV=$(VENV) PYTHON=$(PYTHON) bash scripts/setup_env.sh
	touch $@

vllm:  ## create .venv-vllm with vLLM (CPU build here, `vllm` where nvidia-smi exists; VLLM_PACKAGE overrides)
	PYTHON=$(PYTHON) bash scripts/setup_vllm.sh

book: setup vllm  ## main job: execute every chapter and build the HTML book
	$(BIN)/jupyter-book build -W -n --keep-going --all book/ --config _config.yml --toc _toc.yml --path-output book/
	@echo "open book/_build/html/index.html"

browser:  ## install Debian's chromium for the real-browser test of the built book
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

# The book's chapters are executed once, by `book` (-W: any failing cell or warning fails it);
# nbval runs the labs and runbooks with their defaults, pytest the rest. cost_report reads a gateway's
# request log, which a fresh machine does not have: tests/test_cost_report.py runs it on real traffic.
test: book browser  ## main job + all tests (what .ci/run runs)
	$(BIN)/python -m pytest --nbval-lax --ignore=book/_build --ignore=runbooks/cost_report.ipynb tests labs runbooks

bench: setup  ## run every benchmark (tables on screen, JSON under benchmarks/results/); best on a quiet machine
	@status=0; for script in benchmarks/*.py; do echo "== $$script"; $(BIN)/python $$script || status=1; done; exit $$status

clean:  ## remove the built book and the home folder (keeps .venv and the wheel cache)
	rm -rf book/_build .llmops
