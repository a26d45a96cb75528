"""Load test of ``d2c-fast serve`` on loopback (a script, not a pytest test).

    python benchmarks/serve_load.py [--duration 10] [--threads 2,1] [--json build/serve_load.json]

Same run, one after the other (never two at once), for each ``--threads`` value (torch
threads of the direct calls and of the servers):

1. direct sequential Python calls: ``Sampler.manipulate`` of one face at a time (batch 1),
   and one batch-32 call for the engine's own batched rate; measured before the servers and
   again after them, the ratio taken against the faster of the two (a busy moment on a
   shared machine makes the baseline slow, and the ratio flattering);
2. ``d2c-fast serve builtin --max-batch 1`` and with the defaults (``--max-batch 32
   --max-wait-ms 5``): 1, 8 and 32 concurrent clients, each sending edits (one face, the
   ``smiling`` attribute, strength 3, its own seed) in a closed loop for ``--duration``
   seconds (at most ``--max-requests`` per level) after a warm-up: throughput, p50/p99
   latency, failures;

(1 and 2 for each of ``--methods``: ``d2c``, the paper's edit, 2 U-Net + 2 guide calls, and
``local``, the library's default since 2026-12-07, 3 + 3);
3. overload: a server with ``--queue Q`` gets 4 Q requests at once: every answer must be 200
   or 503 (no other status, no connection error), the server must still answer /healthz,
   and its peak RSS (VmHWM) is read before and after.

Targets (issue 28, 2-core CPU): with 32 clients, edits/s >= 3x the batch-1 sequential rate
and p99 <= 250 ms; zero failed requests below the queue limit.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from d2c_fast.attributes import resolve_attribute            # noqa: E402
from d2c_fast.sampler import Sampler                         # noqa: E402
from machine import cpu_name                                 # noqa: E402
from serve_helpers import Server, face_png, png_tensor       # noqa: E402

ATTR, STRENGTH = "smiling", 3.0
FACES = [face_png(i) for i in range(8)]


def pct(xs, q):
    return float(np.percentile(np.asarray(xs) * 1000.0, q)) if xs else float("nan")


def direct(s, method: str, duration: float) -> dict:
    a = resolve_attribute(ATTR, s)
    faces = [png_tensor(f) for f in FACES]
    kw = {"strength": STRENGTH, "method": method}
    for i in range(5):
        s.manipulate(faces[i % 8], a, seed=i, **kw)
    lat, t0, i, c0 = [], time.perf_counter(), 0, cpu_s()
    while time.perf_counter() - t0 < duration:
        t = time.perf_counter()
        s.manipulate(faces[i % 8], a, seed=i, **kw)
        lat.append(time.perf_counter() - t)
        i += 1
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    x32 = torch.cat([faces[i % 8] for i in range(32)])
    s.manipulate(x32, a, seed=0, **kw)
    t, reps = time.perf_counter(), 0
    while reps < 3 or time.perf_counter() - t < duration / 3:
        s.manipulate(x32, a, seed=reps, **kw)
        reps += 1
    b32 = 32 * reps / (time.perf_counter() - t)
    return {"edits_per_s": len(lat) / wall, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
            "n": len(lat), "batch32_edits_per_s": b32, "threads": torch.get_num_threads(),
            "cpu_ms_per_edit": 1000 * cpu / max(len(lat), 1)}


async def closed_loop(url, clients, duration, max_requests, seed0, method):
    """``clients`` tasks, each sending its next edit when the last one is answered."""
    lat, status, errors = [], {}, []
    sent = [0]
    stop = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as c:
        async def one(k):
            while time.perf_counter() < stop and sent[0] < max_requests:
                sent[0] += 1
                seed = seed0 + sent[0]
                t = time.perf_counter()
                try:
                    r = await c.post("/v1/edit", files={"image": ("f.png", FACES[seed % 8])},
                                     data={"attr": ATTR, "strength": str(STRENGTH),
                                           "seed": str(seed), "method": method})
                    status[r.status_code] = status.get(r.status_code, 0) + 1
                    if r.status_code == 200:
                        lat.append(time.perf_counter() - t)
                except httpx.HTTPError as e:
                    errors.append(type(e).__name__)
        t0 = time.perf_counter()
        await asyncio.gather(*[one(k) for k in range(clients)])
        wall = time.perf_counter() - t0
    failed = sum(n for s, n in status.items() if s != 200) + len(errors)
    return {"clients": clients, "ok": len(lat), "failed": failed, "status": status,
            "errors": errors[:5], "edits_per_s": len(lat) / wall, "p50_ms": pct(lat, 50),
            "p99_ms": pct(lat, 99), "wall_s": wall}


def batch_stats(url) -> dict:
    m = httpx.get(url + "/metrics").text
    v = dict(l.rsplit(" ", 1) for l in m.splitlines() if l and not l.startswith("#"))
    return {"engine_calls": float(v["d2c_serve_batch_images_count"]),
            "engine_s": float(v["d2c_serve_batch_seconds_sum"])}


def cpu_s(pid=None) -> float:
    """CPU seconds (user + system) of process ``pid`` (None: this one)."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmHWM", "VmRSS")):
                k, v = line.split(":")
                out[k] = int(v.split()[0])
    return out


def serve_levels(args, threads, extra, methods) -> dict:
    srv = Server("builtin", *extra, threads=threads)
    try:
        return {m: levels(args, srv, extra, m) for m in methods}
    finally:
        srv.stop()


def levels(args, srv, extra, method) -> list:
    out = []
    for clients in (1, 8, 32):
        asyncio.run(closed_loop(srv.url, clients, args.warmup, 10 ** 6, 10 ** 6, method))
        before, c0, s0 = batch_stats(srv.url), cpu_s(), cpu_s(srv.proc.pid)
        r = asyncio.run(closed_loop(srv.url, clients, args.duration, args.max_requests, 0,
                                    method))
        after, c1, s1 = batch_stats(srv.url), cpu_s(), cpu_s(srv.proc.pid)
        calls = after["engine_calls"] - before["engine_calls"]
        r["mean_batch"] = r["ok"] / calls if calls else float("nan")
        # where the time went: the engine's share of the wall time, CPU seconds per edit of
        # the server process (engine + HTTP) and of this client process
        r["engine_busy"] = (after["engine_s"] - before["engine_s"]) / r["wall_s"]
        r["server_cpu_ms_per_edit"] = 1000 * (s1 - s0) / max(r["ok"], 1)
        r["client_cpu_ms_per_edit"] = 1000 * (c1 - c0) / max(r["ok"], 1)
        out.append(r)
        print(f"  {method:>5} {' '.join(extra) or 'defaults':>13} {clients:>2} clients: "
              f"{r['edits_per_s']:7.1f} edits/s  p50 {r['p50_ms']:6.1f} ms  "
              f"p99 {r['p99_ms']:6.1f} ms  mean batch {r['mean_batch']:4.1f}  "
              f"engine busy {r['engine_busy']:4.0%}  cpu/edit server "
              f"{r['server_cpu_ms_per_edit']:5.1f} ms client {r['client_cpu_ms_per_edit']:4.1f} ms"
              f"  failed {r['failed']}", flush=True)
    return out


async def burst(url, n):
    limits = httpx.Limits(max_connections=n + 4, max_keepalive_connections=n + 4)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as c:
        async def one(i):
            try:
                r = await c.post("/v1/edit", files={"image": ("f.png", FACES[i % 8])},
                                 data={"attr": ATTR, "strength": str(STRENGTH),
                                       "seed": str(i), "method": "d2c"})
                return r.status_code
            except httpx.HTTPError as e:
                return type(e).__name__
        return await asyncio.gather(*[one(i) for i in range(n)])


def overload(args, threads) -> dict:
    q = args.queue
    srv = Server("builtin", "--queue", str(q), threads=threads)
    try:
        asyncio.run(closed_loop(srv.url, 8, args.warmup, 10 ** 6, 0, "d2c"))
        rss0 = rss_kb(srv.proc.pid)
        t = time.perf_counter()
        res = asyncio.run(burst(srv.url, 4 * q))
        wall = time.perf_counter() - t
        rss1 = rss_kb(srv.proc.pid)
        health = httpx.get(srv.url + "/healthz").status_code
        counts = {str(k): res.count(k) for k in sorted(set(res), key=str)}
        return {"queue": q, "sent": 4 * q, "answers": counts, "wall_s": wall,
                "only_200_503": set(res) <= {200, 503}, "healthz_after": health,
                "alive": srv.alive(), "rss_kb_before": rss0, "rss_kb_after": rss1}
    finally:
        srv.stop()


def one_pass(args, threads: int, methods) -> dict:
    """Direct calls, both servers, overload: all with ``threads`` torch threads."""
    torch.set_num_threads(threads)
    print(f"{threads} torch thread(s): direct calls and servers", flush=True)
    res = {"direct": {}, "direct_after": {}, "load_before": os.getloadavg()}

    def directs(where):
        s = Sampler("builtin")
        for m in methods:
            res[where][m] = d = direct(s, m, args.duration)
            print(f"  {m:>5} direct batch 1{' (again)' if where == 'direct_after' else ''}: "
                  f"{d['edits_per_s']:.1f} edits/s  p50 {d['p50_ms']:.1f} ms  p99 "
                  f"{d['p99_ms']:.1f} ms  cpu/edit {d['cpu_ms_per_edit']:.1f} ms; one batch-32 "
                  f"call: {d['batch32_edits_per_s']:.1f} edits/s", flush=True)
    directs("direct")
    res["max_batch_1"] = serve_levels(args, threads, ["--max-batch", "1"], methods)
    res["default"] = serve_levels(args, threads, [], methods)
    directs("direct_after")   # the ratio takes the faster of the two direct measurements
    res["overload"] = o = overload(args, threads)
    res["load_after"] = os.getloadavg()
    print(f"  overload: {o['sent']} at once on --queue {o['queue']}: {o['answers']}, healthz "
          f"{o['healthz_after']}, peak RSS {o['rss_kb_before']['VmHWM'] / 1024:.0f} -> "
          f"{o['rss_kb_after']['VmHWM'] / 1024:.0f} MiB", flush=True)
    res["targets"] = {}
    for m in methods:
        d32 = res["default"][m][-1]
        d = max(res["direct"][m], res["direct_after"][m], key=lambda r: r["edits_per_s"])
        res["targets"][m] = {
            "ratio_32_clients_vs_direct_batch1": d32["edits_per_s"] / d["edits_per_s"],
            "ratio_ok": d32["edits_per_s"] >= 3 * d["edits_per_s"],
            "p99_ok": d32["p99_ms"] <= 250.0,
            "no_failures_below_queue": all(r["failed"] == 0 for r in
                                           res["default"][m] + res["max_batch_1"][m])}
    res["targets"]["overload_ok"] = (o["only_200_503"] and o["healthz_after"] == 200
                                     and o["alive"])
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per level")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds before each level")
    ap.add_argument("--max-requests", type=int, default=3000, help="cap per level")
    ap.add_argument("--queue", type=int, default=64, help="--queue of the overload server")
    ap.add_argument("--threads", default="2,1",
                    help="torch threads of the direct calls and the servers: each value a "
                    "full pass (comma-separated)")
    ap.add_argument("--methods", default="d2c,local",
                    help="edit methods to load (comma-separated; local: the library default)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    methods = args.methods.split(",")
    res = {"cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
           "argv": sys.argv[1:], "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
           "load_before": os.getloadavg(), "runs": {}}
    print(f"{res['cpu']}, {res['cores']} cores, load {res['load_before']}", flush=True)
    for threads in [int(t) for t in args.threads.split(",")]:
        res["runs"][threads] = one_pass(args, threads, methods)
    res["load_after"] = os.getloadavg()
    print(json.dumps({t: r["targets"] for t, r in res["runs"].items()}), flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
