#!/usr/bin/env bash
# The main job, from nothing: set up, train a small VISTA model on MovieLens-100K, start local Kafka and
# Cassandra, backfill the first 80% of the log (by time) from a file, stream the last 20% through Kafka
# into the live worker, and print one user's top-10 from the HTTP scorer before and after its live events.
#
# Knobs (env): VISTA_DEMO_DATA (u.data or user_id,item_id,timestamp CSV), VISTA_DEMO_TRAIN_SECONDS (180),
# VISTA_DEMO_USER (default: the user with the most live events), VISTA_DEMO_PORT (8080), VISTA_DEMO_OUT
# (runs/demo). Stop the servers afterwards with `. .venv/bin/activate && vista infra down`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate

DATA=${VISTA_DEMO_DATA:-../shared/data/ml-100k/u.data}
OUT=${VISTA_DEMO_OUT:-runs/demo}
BUDGET=${VISTA_DEMO_TRAIN_SECONDS:-180}
PORT=${VISTA_DEMO_PORT:-8080}
RUN=demo-$(date +%Y%m%d-%H%M%S)
TOPIC=$RUN-events
mkdir -p "$OUT"
# bold step titles on a terminal only: piped to a file or a CI log, plain text without escapes
if [ -t 1 ]; then step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }; else step() { printf '\n== %s\n' "$*"; }; fi

step "1/7 train the general preset on $DATA ($BUDGET s budget, CPU); one line per epoch"
vista train --data "$DATA" --out "$OUT/model" --preset general --time-budget "$BUDGET" > "$OUT/train.json"
python - "$OUT/train.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
pop = r["most_popular"]["HR@10"]
print(f"model {r['model_version']} ({r['preset']}): {r['epochs']} epochs in {r['train_time_s']} s; test HR@10 "
      f"{r['HR@10']:.4f}, NDCG@10 {r['NDCG@10']:.4f} (leave-one-out, full ranking); most-popular HR@10 {pop:.4f} "
      f"-> {r['HR@10'] / pop:.1f}x most-popular")
PY

step "2/7 start local Kafka (KRaft) and Cassandra 5 (jars from Maven Central on first use)"
vista infra up

step "3/7 split the log by time: 80% history file, 20% live stream; pick the user with the most live events"
DEMO_USER=$(python - "$DATA" "$OUT" "${VISTA_DEMO_USER:-}" <<'PY'
import sys
from collections import Counter
from pathlib import Path
from schemas.interactions import read_interactions
rows = read_interactions(sys.argv[1])
order = sorted(range(len(rows)), key=lambda i: rows[i][3])  # stable: ties keep file order
cut = int(len(order) * 0.8)
out = Path(sys.argv[2])
for name, part in (("history.csv", order[:cut]), ("live.csv", order[cut:])):
    with (out / name).open("w") as fh:
        fh.write("user_id,item_id,timestamp,action\n")
        fh.writelines(f"{rows[i][0]},{rows[i][1]},{rows[i][3]},{rows[i][2]}\n" for i in part)
    print(f"{name}: {len(part)} events", file=sys.stderr)
history_users = {rows[i][0] for i in order[:cut]}
live = Counter(rows[i][0] for i in order[cut:] if rows[i][0] in history_users)
user = sys.argv[3] or live.most_common(1)[0][0]
print(f"demo user {user}: {sum(1 for i in order[:cut] if rows[i][0] == user)} history events, {live[user]} live",
      file=sys.stderr)
print(user)
PY
)

step "4/7 backfill the history into Cassandra (handover cut = the live topic $TOPIC, still empty)"
python -c "from infra.kafka import ensure_topics; from infra.settings import load_settings; ensure_topics(load_settings(), {'$TOPIC': 4})"
vista backfill "$OUT/history.csv" --ckpt "$OUT/model" --handover-topic "$TOPIC" > "$OUT/backfill.json"
python -c "import json,sys; r=json.load(open(sys.argv[1])); print({k: r.get(k) for k in ('status','events','users','rows_written','events_per_s','bad')})" "$OUT/backfill.json"
VERSION=$(python -c "import json; print(json.load(open('$OUT/model/meta.json'))['model_version'])")
vista versions promote "$VERSION"  # the backfill made it live; promoted, it is what the scorers serve

step "5/7 serve rankings over HTTP; user $DEMO_USER's top-10 after the backfill"
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
vista score --user "$DEMO_USER" --all-items --top-k 10 --url "http://127.0.0.1:$PORT" | tee "$OUT/top10_before.txt"

step "6/7 stream the live 20% through Kafka; the worker applies it and stops when caught up"
vista produce --data "$OUT/live.csv" --topic "$TOPIC"
vista worker --ckpt "$OUT/model" --topic "$TOPIC" --group "$RUN" --until-caught-up --log-level INFO

step "7/7 user $DEMO_USER's top-10 after the live events (the same scorer, the row the worker just wrote)"
vista score --user "$DEMO_USER" --all-items --top-k 10 --url "http://127.0.0.1:$PORT" | tee "$OUT/top10_after.txt"
python - "$OUT/top10_before.txt" "$OUT/top10_after.txt" <<'PY'
import sys
def items(path):
    lines = open(path).read().splitlines()
    return [ln.split()[1] for ln in lines[2:] if ln.strip()]
before, after = items(sys.argv[1]), items(sys.argv[2])
print(f"top-10 changed by the live events: {len(set(after) - set(before))} new items, "
      f"{sum(a != b for a, b in zip(before, after))} of 10 positions moved")
PY
echo
echo "done: rows of model $VERSION in Cassandra;" \
     "servers keep running (vista infra down stops them)"
