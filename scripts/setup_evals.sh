#!/usr/bin/env bash
# Create the evaluation tools' own virtual environment (.venv-evals), separate from the project's .venv.
#
# Why separate: lm-evaluation-harness brings datasets, pyarrow, scikit-learn and friends, Evidently pins
# pandas below 3, and none of it is needed by the library itself. The library runs these tools as
# subprocesses from here (llmops_lib.evals.harness.tools_python; LLMOPS_EVALS_VENV names another place)
# and talks to the endpoints they evaluate over HTTP, as users of the tools do.
#
# What: EleutherAI's lm-evaluation-harness with its API models (local-completions), Inspect AI with the
# openai client its OpenAI-compatible providers use, Evidently (drift reports) with pandas < 3 and the
# VADER sentiment lexicon (a descriptor that needs no downloaded model), Weights & Biases (offline runs).
#
# Idempotent: a stamp file records the requirement list that was installed; rerunning with the same
# list does nothing (about 2.5 min and 1.5 GB otherwise).
set -euo pipefail

VENV=${LLMOPS_EVALS_VENV:-.venv-evals}
PYTHON=${PYTHON:-python3.11}
REQUIREMENTS=("lm-eval[api]==0.4.13" "inspect-ai==0.3.285" "openai==3.57.0" "evidently==0.7.23" "pandas<3"
  "wandb==0.31.0" "vadersentiment==3.3.2")
STAMP="$VENV/.installed"

say() { printf '\n==> %s\n' "$*"; }

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "${REQUIREMENTS[*]}" ]; then
  echo "$VENV already has ${REQUIREMENTS[*]}"
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --quiet)
"${PIP[@]}" install --upgrade "pip>=24" 2>&1 | grep -v '^WARNING: Location' || true

say "installing the evaluation tools (about 2.5 minutes, ~1.5 GB)"
"${PIP[@]}" install "${REQUIREMENTS[@]}" 2>&1 | grep -v '^WARNING: Location' || true

"$VENV/bin/python" -m pip check
"$VENV/bin/python" -c "import importlib.metadata as m, lm_eval, inspect_ai, evidently, wandb, vaderSentiment; print(*(f'{d} {m.version(d)}' for d in ('lm_eval', 'inspect_ai', 'evidently', 'wandb')), sep=' | ')" \
  || { echo "error: the evaluation-tools install did not complete; see the pip output above" >&2; exit 1; }
echo "${REQUIREMENTS[*]}" > "$STAMP"
