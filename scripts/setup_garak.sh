#!/usr/bin/env bash
# Create garak's own slim virtual environment (.venv-garak) for the red-team runbook (`-p garak=true`).
#
# Why slim and separate: garak 0.17.1 declares torch, transformers, datasets, langchain, litellm and a
# dozen cloud SDKs (gigabytes, a CUDA torch build by default). Its probes that read shipped prompts and
# its string detectors (promptinject, dan, mitigation) need none of them: garak itself without its
# declared dependencies (--no-deps) plus the small pure-Python ones they import (~190 MB). Probes or
# detectors that load models from a hub do not work here, by design (offline).
#
# Idempotent: a stamp file records the requirement list that was installed.
set -euo pipefail

VENV=${LLMOPS_GARAK_VENV:-.venv-garak}
PYTHON=${PYTHON:-python3.11}
GARAK="garak==0.17.1"
REQUIREMENTS=("pyyaml==6.0.4" "xdg-base-dirs==6.0.3" "colorama==0.4.6" "tqdm==4.70.1" "openai==2.54.0"
  "backoff==2.2.1" "httpx==0.28.1" "jsonpath-ng==1.16.0" "requests==2.34.2" "aiohttp==3.14.5" "numpy==2.4.6"
  "nltk==3.10.4" "langdetect==1.0.9")
STAMP="$VENV/.installed"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$GARAK ${REQUIREMENTS[*]}" ]; then
  echo "$VENV already has $GARAK"
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --quiet)
"${PIP[@]}" install --no-deps "$GARAK" 2>&1 | grep -v '^WARNING: Location' || true
# pip reports garak's undeclared-here dependencies as conflicts: expected, they are left out on purpose
"${PIP[@]}" install "${REQUIREMENTS[@]}" 2>&1 | grep -v -e '^WARNING: Location' -e 'which is not installed' -e 'dependency resolver' || true
"$VENV/bin/python" -c "import garak.probes.promptinject, garak.detectors.dan, garak.generators.openai" \
  || { echo "error: the garak install did not complete; see the pip output above" >&2; exit 1; }
echo "$GARAK ${REQUIREMENTS[*]}" > "$STAMP"
