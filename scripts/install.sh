#!/usr/bin/env bash
# Create .venv and install skyfuse with its dev extra. Idempotent: re-running only installs what changed.
# Torch: on a machine without an NVIDIA GPU the CPU build is installed first (about 1.5 GB in all
# instead of a 5 GB CUDA download); set SKYFUSE_TORCH to choose another spec, e.g.
#   SKYFUSE_TORCH="torch==2.13.0" SKYFUSE_TORCH_INDEX=https://download.pytorch.org/whl/cu128 make demo
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PY="$VENV/bin/python"
stamp="$VENV/.skyfuse-installed"
if [ ! -x "$PY" ]; then
  "${PYTHON:-python3}" -m venv "$VENV"
  "$PY" -m pip install -q --upgrade pip
fi
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then
  exit 0
fi
torch_spec="${SKYFUSE_TORCH:-torch==2.13.0}"
if ! "$PY" -c "import torch" 2>/dev/null; then
  if [ -n "${SKYFUSE_TORCH_INDEX:-}" ]; then
    "$PY" -m pip install -q "$torch_spec" --index-url "$SKYFUSE_TORCH_INDEX"
  elif command -v nvidia-smi >/dev/null 2>&1; then
    "$PY" -m pip install -q "$torch_spec"
  else
    # CPU machine: the CPU wheel (on this kind of machine pip finds it on local disk)
    "$PY" -m pip install -q "$torch_spec" || \
      "$PY" -m pip install -q "$torch_spec" --index-url https://download.pytorch.org/whl/cpu
  fi
fi
"$PY" -m pip install -q -e ".[dev]"
touch "$stamp"
