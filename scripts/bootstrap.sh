#!/usr/bin/env bash
# Create/refresh .venv idempotently. Installs torch (pinned CPU wheel) FIRST, then the package.
# Quiet when nothing changed: a stamp keyed on pyproject.toml's hash skips the pip work.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.seem_ray_stamp
want=$(sha256sum pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi
echo "[bootstrap] setting up $VENV (first run takes a few minutes; log: $VENV/bootstrap.log)..." >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
LOG=$VENV/bootstrap.log
pip_install() {
  if ! "$VENV/bin/python" -m pip install -q "$@" >>"$LOG" 2>&1; then
    tail -n 30 "$LOG" >&2
    echo "[bootstrap] pip install $* failed (full log: $LOG)" >&2
    exit 1
  fi
}
pip_install --upgrade pip
pip_install "torch==2.13.0"   # first, pinned: a bare torch requirement pulls a multi-GB CUDA build
pip_install -e ".[dev]"
echo "$want" > "$STAMP"
echo "[bootstrap] done." >&2
