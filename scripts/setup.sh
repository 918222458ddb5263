#!/usr/bin/env bash
# Create .venv (if needed) and install the project with its dev extras. Idempotent and quick when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV="${FTPIPE_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtualenv $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
# Reinstall only when the dependency spec changes: the stamp holds a hash of pyproject.toml + constraints.txt.
stamp="$VENV/.ftpipe-installed"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing dependencies (torch pinned by constraints.txt)"
  # Some machines' pip config lists local indexes that may be absent; drop only those noise lines.
  quiet() { { "$@" 2>&1; } | { grep -v "is ignored: it is neither a file nor a directory" || true; }; }
  quiet "$VENV/bin/python" -m pip install --quiet --upgrade pip
  # constraints.txt pins torch to the CPU build: an unpinned torch would pull a multi-GB CUDA build.
  quiet "$VENV/bin/python" -m pip install --quiet -c constraints.txt -e '.[dev]'
  echo "$want" > "$stamp"
fi
