"""Scorer latency: fixed cost whatever the history length, vs an HSTU-style baseline; throughput under load.

    python -m benchmarks.scorer_latency [--lengths 10,1000,10000,100000,1000000] [--rates 100,200,300,500,700]

1. Latency vs history length. One synthetic user per length; its row is built with `model.update` in
   chunks (the same update apply_events calls) and written to Cassandra. Each is scored over HTTP
   (a `vista serve` subprocess, cache off: every request reads Cassandra) with 100 candidates,
   rounds interleaved across lengths so machine-load drift hits every length alike.
   Baseline (HSTU-style, in this process): each request reads the user's raw history from a
   benchmark-only Cassandra table (`bench_raw_history`, chunked blobs) and runs one HSTU layer of
   pointwise (SiLU) full self-attention over history + candidates (O((T+C)^2 D)), then scores. Above
   `--baseline-cap` events the self-attention is infeasible here and only the read + candidate-to-history
   attention (O(C T D), a lower bound of the baseline's cost) is timed; the JSON says which.
2. Throughput on loopback: an open-loop async load generator (requests sent on schedule, latency
   measured from the scheduled time, so a slow server cannot hide queueing) at increasing rates.
JSON + PNG under runs/bench/ (benchmarks/results/ with `--commit-results`; `--out FILE` for another place).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks.output import Run, add_output_args, output_file

NUM_ITEMS = 10_000
RAW_CHUNK = 50_000
RAW_TABLE = "bench_raw_history"


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------- setup
def build_rows(model, version: str, lengths: list[int], prefix: str, store, session, keyspace: str):  # noqa: ANN001
    """One user per length: row via model.update in chunks, raw history into the baseline table."""
    import torch
    from tqdm import tqdm

    from models.state import EventBatch
    from schemas.codec import encode_tensor
    from stream.rows import rows_from_states

    session.execute(f"CREATE TABLE IF NOT EXISTS {keyspace}.{RAW_TABLE} (user_id text, chunk int, items blob, "
                    "actions blob, stamps blob, PRIMARY KEY (user_id, chunk))", timeout=60)
    insert = session.prepare(f"INSERT INTO {keyspace}.{RAW_TABLE} (user_id, chunk, items, actions, stamps) "
                             "VALUES (?, ?, ?, ?, ?)")
    g = torch.Generator().manual_seed(0)
    users = {}
    for n in lengths:
        user = f"{prefix}-T{n}"
        items = torch.randint(1, NUM_ITEMS + 1, (n,), generator=g)
        actions = torch.randint(0, 5, (n,), generator=g)
        stamps = torch.randint(1, 3600, (n,), generator=g).cumsum(0) + 1_600_000_000
        state = model.init_state(1)
        for s in tqdm(range(0, n, RAW_CHUNK), desc=f"state T={n}", leave=False):
            e = min(n, s + RAW_CHUNK)
            state = model.update(state, EventBatch(items[s:e], actions[s:e], stamps[s:e], torch.tensor([e - s])),
                                 chunk_size=8192)
            session.execute(insert, (user, s // RAW_CHUNK, encode_tensor(items[s:e], "int64"),
                                     encode_tensor(actions[s:e], "int64"), encode_tensor(stamps[s:e], "int64")))
        with torch.no_grad():
            row = rows_from_states([user], version, state, model.summarize(state))[0]
        store.write([row])
        users[n] = user
    return users


class HSTUBaseline:
    """Reads the raw history and attends over it per request (what a fixed-size summary avoids)."""

    def __init__(self, model, session, keyspace: str, cap: int):  # noqa: ANN001
        import torch

        self.model, self.session, self.cap = model, session, cap
        self.select = session.prepare(f"SELECT items, actions FROM {keyspace}.{RAW_TABLE} WHERE user_id = ?")
        d = model.cfg.dim
        g = torch.Generator().manual_seed(1)
        self.w_in = torch.randn(d, 4 * d, generator=g) / d**0.5
        self.w_out = torch.randn(d, d, generator=g) / d**0.5

    def score(self, user: str, candidates) -> tuple[list[float], str]:  # noqa: ANN001
        import torch
        import torch.nn.functional as F

        from schemas.codec import decode_tensor

        rows = list(self.session.execute(self.select, (user,), timeout=120))
        items = torch.cat([decode_tensor(bytes(r.items)) for r in rows]).long()
        actions = torch.cat([decode_tensor(bytes(r.actions)) for r in rows]).long()
        emb = self.model.embedding
        with torch.no_grad():
            hist = emb.item(items)
            if emb.action is not None:
                hist = hist + emb.action(actions.clamp(max=self.model.cfg.num_actions - 1))
            cand = emb.item(candidates)
            t = hist.shape[0]
            if t <= self.cap:  # full HSTU layer: history and candidates attend to the whole history
                x = torch.cat([hist, cand])
                u, v, q, k = F.silu(F.layer_norm(x, x.shape[-1:]) @ self.w_in).chunk(4, dim=-1)
                out = torch.empty_like(x)
                for s in range(0, x.shape[0], 2048):  # row blocks keep memory bounded
                    a = F.silu(q[s:s + 2048] @ k[:t].T) / t
                    out[s:s + 2048] = (a @ v[:t]) * u[s:s + 2048]
                y = x + out @ self.w_out
                mode = "full"
            else:  # infeasible here: only read + candidate-to-history attention (lower bound)
                xh = F.layer_norm(hist, hist.shape[-1:])
                k, v = xh @ self.w_in[:, :self.w_in.shape[1] // 4], xh
                a = F.silu(cand @ k.T) / t
                y = torch.cat([hist[:0], cand + a @ v])
                mode = "read+target-only"
            logits = (y[-cand.shape[0]:] * cand).sum(-1)
        return logits.tolist(), mode


# ---------------------------------------------------------------------------------------------- serving
def start_server(ckpt: Path, port: int, threads: int, log: Path) -> subprocess.Popen:
    import httpx

    version = json.loads((ckpt / "meta.json").read_text())["model_version"]  # pinned: whatever is promoted
    cmd = [sys.executable, "-m", "cli", "serve", "--ckpt", str(ckpt), "--model-version", version, "--port", str(port),
           "--threads", str(threads), "--cache-ttl", "0"]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not become ready")


def latency_vs_length(url: str, users: dict[int, str], baseline: HSTUBaseline, cands: list[list[str]],
                      vocab, rounds: int, baseline_rounds: int) -> dict:  # noqa: ANN001
    import httpx
    from tqdm import tqdm

    vista: dict[int, list[float]] = {n: [] for n in users}
    base: dict[int, list[float]] = {n: [] for n in users}
    modes: dict[int, str] = {}
    with httpx.Client(base_url=url, timeout=60) as client:
        for i in tqdm(range(rounds), desc="latency rounds"):
            for n, user in users.items():
                body = {"user_id": user, "candidates": cands[i % len(cands)]}
                t0 = time.perf_counter()
                r = client.post("/v1/score", json=body)
                vista[n].append(time.perf_counter() - t0)
                if r.status_code != 200:
                    raise RuntimeError(r.text)
                if i < baseline_rounds:
                    t0 = time.perf_counter()
                    _, modes[n] = baseline.score(user, vocab.encode(cands[i % len(cands)]))
                    base[n].append(time.perf_counter() - t0)
    out = {"vista_http": {}, "hstu_baseline": {}}
    for n in users:
        out["vista_http"][str(n)] = {"p50_ms": 1e3 * _pct(vista[n], 50), "p99_ms": 1e3 * _pct(vista[n], 99),
                                     "mean_ms": 1e3 * statistics.fmean(vista[n]), "requests": len(vista[n])}
        out["hstu_baseline"][str(n)] = {"p50_ms": 1e3 * _pct(base[n], 50), "requests": len(base[n]),
                                        "mode": modes[n]}
    return out


class _Conn:
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol (a light load generator:
    httpx costs the client more CPU per request than the scorer spends, on a 2-core machine)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    async def post(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        await self.reader.readexactly(length)
        return status


def _raw_request(port: int, body: dict) -> bytes:
    data = json.dumps(body).encode()
    return (f"POST /v1/score HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


async def load_level(port: int, rate: float, duration: float, users: list[str], cands: list[list[str]],
                     max_conns: int = 128) -> dict:
    """Open loop: request i is due at i / rate; latency counts from that due time (queueing included).
    At most `max_conns` requests are in flight; a request that finds none free waits (and that wait counts).
    A request whose kept-alive connection the server has closed is sent again on a new one (the reconnect
    counts in its latency); only a failure on a fresh connection is an error."""
    bodies = [_raw_request(port, {"user_id": users[i % len(users)], "candidates": cands[i % len(cands)]})
              for i in range(len(users) * len(cands))]
    n = int(rate * duration)
    lat: list[float] = []
    errors = 0
    idle: asyncio.Queue[_Conn] = asyncio.Queue()
    for _ in range(max_conns):
        idle.put_nowait(_Conn(*await asyncio.open_connection("127.0.0.1", port)))
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2

    async def one(i: int) -> None:
        nonlocal errors
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - loop.time()))
        conn = await idle.get()
        ok = False
        for attempt in range(2):  # a connection idle past the server's keep-alive (5 s) is closed: reopen once
            try:
                ok = await conn.post(bodies[i % len(bodies)]) == 200
                break
            except (OSError, asyncio.IncompleteReadError, ValueError):
                conn = _Conn(*await asyncio.open_connection("127.0.0.1", port))
        idle.put_nowait(conn)
        if ok:
            lat.append(loop.time() - due)
        else:
            errors += 1

    await asyncio.gather(*(one(i) for i in range(n)))
    wall = loop.time() - start
    while not idle.empty():
        idle.get_nowait().writer.close()
    if not lat:
        return {"rate": rate, "sent": n, "achieved_rps": 0.0, "errors": errors}
    return {"rate": rate, "sent": n, "achieved_rps": len(lat) / wall, "errors": errors,
            "p50_ms": 1e3 * _pct(lat, 50), "p99_ms": 1e3 * _pct(lat, 99), "max_ms": 1e3 * max(lat)}


def server_histogram(url: str) -> dict[str, float]:
    """Cumulative buckets of the server's own score latency (receipt of the body to answer) and batches."""
    import httpx

    out = {}
    for ln in httpx.get(f"{url}/metrics").text.splitlines():
        if ln.startswith('vista_scorer_request_seconds_bucket{le="') and 'transport="http"' in ln:
            out[ln.split('le="')[1].split('"')[0]] = float(ln.split()[-1])
        elif ln.startswith("vista_scorer_batch_size_count"):
            out["batches"] = float(ln.split()[-1])
    return out


def _hist_quantile(before: dict[str, float], after: dict[str, float], q: float) -> float | None:
    """Upper bucket bound (ms) under which a fraction q of this level's requests finished."""
    edges = sorted((float(k), after[k] - before.get(k, 0.0)) for k in after if k not in ("batches", "+Inf"))
    total = after.get("+Inf", 0.0) - before.get("+Inf", 0.0)
    if total <= 0:
        return None
    for edge, count in edges:
        if count >= q * total:
            return 1e3 * edge
    return float("inf")


# ---------------------------------------------------------------------------------------------- main
def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    lv = result["latency_vs_length"]
    ns = sorted(int(n) for n in lv["vista_http"])
    a.plot(ns, [lv["vista_http"][str(n)]["p50_ms"] for n in ns], "o-", label="VISTA scorer p50 (HTTP, stored seeds)")
    full = [n for n in ns if lv["hstu_baseline"][str(n)]["mode"] == "full"]
    part = [n for n in ns if lv["hstu_baseline"][str(n)]["mode"] != "full"]
    a.plot(full, [lv["hstu_baseline"][str(n)]["p50_ms"] for n in full], "s-", label="HSTU-style full attention p50")
    if part:
        a.plot(part, [lv["hstu_baseline"][str(n)]["p50_ms"] for n in part], "s--",
               label="baseline read + target attn only (full infeasible)")
    a.set(xscale="log", yscale="log", xlabel="history length (events)", ylabel="latency (ms)",
          title="Latency vs history length (100 candidates)")
    a.legend(fontsize=7)
    tp = result["throughput"]
    tp = [t for t in tp if "p50_ms" in t]
    rates = [t["rate"] for t in tp]
    b.plot(rates, [t["p50_ms"] for t in tp], "o-", label="p50")
    b.plot(rates, [t["p99_ms"] for t in tp], "o-", label="p99")
    b.axhline(20, color="gray", ls=":", label="20 ms target")
    b.set(xlabel="offered rate (requests/s)", ylabel="latency (ms)", yscale="log", title="Load on loopback")
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", default="10,1000,10000,100000,1000000")
    p.add_argument("--candidates", type=int, default=100)
    p.add_argument("--rounds", type=int, default=300, help="requests per length (interleaved)")
    p.add_argument("--baseline-rounds", type=int, default=5)
    p.add_argument("--baseline-cap", type=int, default=10_000, help="longest history given full self-attention")
    p.add_argument("--rates", default="100,200,300,500,700")
    p.add_argument("--duration", type=float, default=8.0, help="seconds per load level")
    p.add_argument("--server-threads", type=int, default=1)
    p.add_argument("--preset", default="general", help="model preset: general (u·e alone) or target (u·e + "
                   "target attention Δ over seeds and recent events, served whole)")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON file (PNG beside it); default: scorer_latency.json in runs/bench/")
    add_output_args(p)
    args = p.parse_args()
    run = Run()  # date and load average at the start
    out = output_file("scorer_latency.json", args.commit_results, out=args.out)
    import torch

    from infra.cassandra import connect
    from infra.settings import load_settings
    from models.checkpoint import save_checkpoint
    from models.vista import VistaModel
    from models.vocab import ItemVocab
    from stream.store import SummaryStore

    lengths = [int(x) for x in args.lengths.split(",")]
    settings = load_settings()
    session = connect(settings)
    torch.manual_seed(uuid.uuid4().int % 2**31)
    vocab = ItemVocab([str(i) for i in range(1, NUM_ITEMS + 1)], oov_buckets=64)
    from models.preset import build_configs

    model = VistaModel(build_configs(args.preset, NUM_ITEMS)[0]).eval()  # default: general (D 64, no seeds)
    torch.nn.init.normal_(model.scorer.w_r.weight, std=0.1)  # target attention on (it starts at zero in training)
    tmp_dir = tempfile.TemporaryDirectory(prefix="scorer-bench-")  # checkpoint + server log, removed at the end
    tmp = Path(tmp_dir.name)
    version = save_checkpoint(tmp / "ckpt", model, vocab)
    prefix = f"bench-scorer-{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    users = build_rows(model, version, lengths, prefix, SummaryStore(session), session, settings.cassandra_keyspace)
    build_s = time.perf_counter() - t0
    g = torch.Generator().manual_seed(2)
    cands = [[str(i) for i in (torch.randperm(NUM_ITEMS, generator=g)[: args.candidates] + 1).tolist()]
             for _ in range(32)]
    port = _free_port()
    server = start_server(tmp / "ckpt", port, args.server_threads, tmp / "server.log")
    url = f"http://127.0.0.1:{port}"
    try:
        baseline = HSTUBaseline(model, session, settings.cassandra_keyspace, args.baseline_cap)
        lv = latency_vs_length(url, users, baseline, cands, vocab, args.rounds, args.baseline_rounds)
        lo, hi = str(min(n for n in lengths if n >= 1000)), str(max(lengths))
        lv["ratio_p50_vista"] = lv["vista_http"][hi]["p50_ms"] / lv["vista_http"][lo]["p50_ms"]
        lv["ratio_p50_baseline"] = lv["hstu_baseline"][hi]["p50_ms"] / lv["hstu_baseline"][lo]["p50_ms"]
        lv["ratio_between"] = [lo, hi]
        lv["baseline_note"] = (f"full HSTU self-attention up to {args.baseline_cap} events; above that only the "
                               "raw-history read + candidate-to-history attention is timed (a lower bound), so "
                               "ratio_p50_baseline understates the full baseline's growth")
        throughput: list[dict] = []
        partial = {"preset": args.preset, "latency_vs_length": lv, "throughput": throughput, "partial": True}
        out.write_text(json.dumps(partial | {"meta": run.metadata()}, indent=2))  # part 1 survives a failure in part 2
        for rate in [float(r) for r in args.rates.split(",")]:
            before = server_histogram(url)
            level = asyncio.run(load_level(port, rate, args.duration, list(users.values()), cands))
            after = server_histogram(url)
            batches = after.get("batches", 0) - before.get("batches", 0)
            level["mean_batch"] = level["sent"] / batches if batches else 0.0
            level["server_p50_ms_le"] = _hist_quantile(before, after, 0.50)
            level["server_p99_ms_le"] = _hist_quantile(before, after, 0.99)
            throughput.append(level)
            print(json.dumps(level))
    finally:
        server.terminate()
        server.wait(timeout=30)
        tmp_dir.cleanup()
    delete = session.prepare(f"DELETE FROM {settings.cassandra_keyspace}.{RAW_TABLE} WHERE user_id = ?")
    for user in users.values():  # the raw histories were only for the baseline
        session.execute(delete, (user,))
    session.cluster.shutdown()
    result = {
        "benchmark": "scorer_latency", "preset": args.preset, "model_version": version,
        "config": model.cfg.model_dump(),
        "candidates": args.candidates, "rounds": args.rounds, "baseline_rounds": args.baseline_rounds,
        "baseline_cap": args.baseline_cap, "server_threads": args.server_threads, "row_build_s": build_s,
        "meta": run.metadata(),
        "latency_vs_length": lv, "throughput": throughput,
    }
    out.write_text(json.dumps(result, indent=2))
    plot(result, out.with_suffix(".png"))
    print(json.dumps({k: lv[k] for k in ("ratio_p50_vista", "ratio_p50_baseline", "ratio_between")}))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
