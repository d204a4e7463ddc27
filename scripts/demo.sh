#!/usr/bin/env bash
# Set up from nothing and run the main job: train a small VISTA model on
# MovieLens-100K (CPU, a couple of minutes) and print one user's top-10.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
DATA=${VISTA_DEMO_DATA:-../shared/data/ml-100k/u.data}
OUT=${VISTA_DEMO_OUT:-runs/demo}
vista train --data "$DATA" --out "$OUT" --time-budget "${VISTA_DEMO_TRAIN_SECONDS:-120}"
vista recommend --ckpt "$OUT" --data "$DATA" --user "${VISTA_DEMO_USER:-1}" --top-k 10
