#!/usr/bin/env bash
# The main job, from nothing: set up, train a small VISTA model on MovieLens-100K, start local Kafka and
# Cassandra, backfill the first 80% of the log (by time) from a file, stream the last 20% through Kafka
# into the live worker, then serve rankings over HTTP and print one user's top-10.
#
# Knobs (env): VISTA_DEMO_DATA (u.data or user_id,item_id,timestamp CSV), VISTA_DEMO_TRAIN_SECONDS (120),
# VISTA_DEMO_USER (1), VISTA_DEMO_PORT (8080), VISTA_DEMO_OUT (runs/demo). Stop the servers afterwards
# with `. .venv/bin/activate && vista infra down`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate

DATA=${VISTA_DEMO_DATA:-../shared/data/ml-100k/u.data}
OUT=${VISTA_DEMO_OUT:-runs/demo}
USER_ID=${VISTA_DEMO_USER:-1}
PORT=${VISTA_DEMO_PORT:-8080}
RUN=demo-$(date +%Y%m%d-%H%M%S)
TOPIC=$RUN-events
mkdir -p "$OUT"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1/6 train a small model on $DATA (${VISTA_DEMO_TRAIN_SECONDS:-120} s budget, CPU)"
vista train --data "$DATA" --out "$OUT/model" --time-budget "${VISTA_DEMO_TRAIN_SECONDS:-120}" \
  | tee "$OUT/train.json" | python -c 'import json,sys; r=json.load(sys.stdin); print({k: r[k] for k in ("model_version","epochs","HR@10","NDCG@10")}, "most-popular HR@10", r["most_popular"]["HR@10"])'

step "2/6 start local Kafka (KRaft) and Cassandra 5 (jars from Maven Central on first use)"
vista infra up

step "3/6 split the log by time: 80% history file, 20% live stream"
python - "$DATA" "$OUT" <<'PY'
import sys
from pathlib import Path
from models.training.data import read_interactions
rows = read_interactions(sys.argv[1])
order = sorted(range(len(rows)), key=lambda i: rows[i][3])  # stable: ties keep file order
cut = int(len(order) * 0.8)
out = Path(sys.argv[2])
for name, part in (("history.csv", order[:cut]), ("live.csv", order[cut:])):
    with (out / name).open("w") as fh:
        fh.write("user_id,item_id,timestamp,action\n")
        fh.writelines(f"{rows[i][0]},{rows[i][1]},{rows[i][3]},{rows[i][2]}\n" for i in part)
    print(f"{name}: {len(part)} events")
PY

step "4/6 backfill the history into Cassandra (handover cut = the live topic $TOPIC, still empty)"
python -c "from infra.kafka import ensure_topics; from infra.settings import load_settings; ensure_topics(load_settings(), {'$TOPIC': 4})"
vista backfill "$OUT/history.csv" --ckpt "$OUT/model" --handover-topic "$TOPIC" --no-progress

step "5/6 stream the live 20% through Kafka; the worker applies it and stops when caught up"
vista produce --data "$OUT/live.csv" --topic "$TOPIC"
vista worker --ckpt "$OUT/model" --topic "$TOPIC" --group "$RUN" --until-caught-up --log-level WARNING

step "6/6 serve rankings over HTTP and score user $USER_ID over every known item"
vista serve --ckpt "$OUT/model" --port "$PORT" --log-level WARNING > "$OUT/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
python - "$PORT" <<'PY'
import sys, time, httpx
url = f"http://127.0.0.1:{sys.argv[1]}/readyz"
for _ in range(240):
    try:
        if httpx.get(url, timeout=2).status_code == 200:
            sys.exit(0)
    except httpx.HTTPError:
        pass
    time.sleep(0.5)
sys.exit("scorer did not become ready; see runs/demo/serve.log")
PY
vista score --user "$USER_ID" --all-items --top-k 10 --url "http://127.0.0.1:$PORT"
echo
echo "done: rows of model $(python -c "import json; print(json.load(open('$OUT/model/meta.json'))['model_version'])") in Cassandra;" \
     "servers keep running (vista infra down stops them)"
