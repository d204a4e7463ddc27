#!/usr/bin/env bash
# Create .venv (once) and install vista-stream with its test extras. Safe to rerun.
# pip's cache (~/.cache/pip) keeps the large torch wheel across runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f "$stamp" ]; then
  python -m pip install -q --upgrade pip wheel
  python -m pip install -q -e ".[test]"
  rm -f .venv/.installed-* && touch "$stamp"
fi
