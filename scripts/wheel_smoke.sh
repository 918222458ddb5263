#!/usr/bin/env bash
# Build the wheel, install it NON-editable into a fresh virtualenv and use it from outside the repo. The test
# suite runs against the editable install (the repo on sys.path), which hides modules, data files and
# dependencies the wheel lacks. Needs .venv (scripts/setup.sh) for the build tools; pip's cache makes the
# second install of the same dependencies cheap.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
PY="$(cd "${FTPIPE_VENV:-.venv}" && pwd)/bin/python"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
quiet() { { "$@" 2>&1; } | { grep -v "is ignored: it is neither a file nor a directory" || true; }; }

# Build from a copy of the checkout's files (tracked + untracked, minus .gitignore'd): a stale build/ must not
# leak into the wheel, and the build writes nothing into the repo.
mkdir "$work/src"
git ls-files -z --cached --others --exclude-standard \
  | (while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done) \
  | tar --null -T - -cf - | tar -xf - -C "$work/src"
quiet "$PY" -m pip wheel --quiet --no-deps --no-build-isolation -w "$work/dist" "$work/src"
wheel=("$work"/dist/ftpipe-*.whl)
echo "[wheel-smoke] built $(basename "${wheel[0]}")"

# Dependencies come from a wheelhouse kept between runs: offline when it already holds a solution, else pip
# fills it first (pip's HTTP cache is not always usable, e.g. behind some proxies). `pip wheel`, not
# `pip download`: a dependency published only as an sdist (rouge-score) is built once and kept as a wheel.
wheelhouse="${FTPIPE_WHEELHOUSE:-${XDG_CACHE_HOME:-$HOME/.cache}/ftpipe/wheelhouse}"
mkdir -p "$wheelhouse"
# A venv without its own pip: the dev venv's pip installs into it (--python), which saves bootstrapping one.
# --no-compile: byte-compiling torch and friends for one smoke run costs minutes and buys nothing.
"$PY" -m venv --without-pip "$work/venv"
install() {
  quiet "$PY" -m pip --python "$work/venv/bin/python" install --quiet --no-compile -c constraints.txt "$@" \
    "${wheel[0]}"
}
if ! install --no-index --find-links "$wheelhouse" >/dev/null 2>&1; then
  echo "[wheel-smoke] filling the wheelhouse $wheelhouse"
  fill() { quiet "$PY" -m pip wheel --quiet -c constraints.txt -w "$wheelhouse" "${wheel[0]}"; }
  # One retry: an index page that fails to load reads to pip as "no versions" (seen with rouge-score).
  fill || { echo "[wheel-smoke] retrying once"; fill; }
  rm -f "$wheelhouse"/ftpipe-*.whl  # the project itself always comes from this run's build
  install --no-index --find-links "$wheelhouse"
fi

# From outside the repo with no PYTHONPATH: only the installed wheel can answer these imports.
cd "$work"
unset PYTHONPATH
"$work/venv/bin/python" - <<'EOF'
import sys

import backend.app
import backend.trainer.train
import schemas
import validation

for mod in (backend.app, backend.trainer.train, schemas, validation):
    assert "site-packages" in (mod.__file__ or ""), f"{mod.__name__} imported from {mod.__file__}"
assert schemas.load_schema("chat")["type"] == "object"
print(f"[wheel-smoke] backend and trainer import from {sys.prefix}")
EOF
"$work/venv/bin/ftpipe" validate "$repo/datasets/customer-support/train.jsonl"
echo "[wheel-smoke] ok in ${SECONDS}s"
