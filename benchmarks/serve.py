"""Serving under load: one request at a time vs concurrent FCFS vs priority + non-stall.

    python benchmarks/serve.py [--rates 0.25,0.5,1,2] [--requests 16] [--systems a,b,c]
                               [--backend transformers|llama_cpp] [--gen-threads 1]

For each system a real ``searchagent serve`` process is started on 127.0.0.1 (free port)
over an index of the bundled sample corpus (built once into bench-out/serve-index), and
a load generator sends the same Poisson arrival sequence at each rate: a seeded mix of
parametric / single / multi-hop questions from the bundled sample questions. Everything
is bounded: --requests per rate, a client timeout, and --max-seconds per system after
which the remaining rates are skipped. The server's /metrics are read before and after
each rate for the generator idle fraction, the time retrievals stalled generation,
non-stall cuts and KV/prefix reuse.

  (a) one at a time: --sessions 1, FCFS, no non-stall
  (b) concurrent FCFS: --sessions N, FCFS, no non-stall
  (c) priority + non-stall: --sessions N, priority queue, non-stall retrieval
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import OUT, ROOT, percentiles_ms, table  # noqa: E402

SAMPLE = ROOT / "searchagent" / "sample"
HOST = "127.0.0.1"
SYSTEMS = {
    "a": ("one at a time", ["--scheduler", "fcfs", "--no-non-stall", "--sessions", "1"]),
    "b": ("concurrent FCFS", ["--scheduler", "fcfs", "--no-non-stall"]),
    "c": ("priority + non-stall", ["--scheduler", "priority", "--non-stall"]),
}
MIX = (("parametric", 0.25), ("single", 0.35), ("multi", 0.40))
# small prompts so a run fits its time budget on 2 cores; the same for every system
LIGHT = {"RETRIEVAL__K": "3", "AGENT__CONTEXT_BUDGET_TOKENS": "300",
         "GENERATOR__MAX_NEW_TOKENS": "24", "RETRIEVAL__FUNNEL_COARSE_K": "30"}
SUSTAIN = 0.8        # a rate is sustained when throughput >= 80% of the offered rate
METRICS = ("generator_busy_seconds", "active_seconds", "retrieval_stall_seconds",
           "nonstall_cuts_total", "retrievals_total", "prompt_tokens_total",
           "cached_prompt_tokens_total", "queue_wait_seconds_sum", "queue_wait_seconds_count",
           "generations_total")


def ensure_index(folder: Path) -> Path:
    from index.build import build_index
    from index.manifest import verify_index
    from searchagent.errors import IndexFormatError

    try:
        verify_index(folder, "size")
    except IndexFormatError:
        build_index(SAMPLE / "corpus.jsonl.gz", folder, overwrite=folder.exists())
    return folder


def workload(n: int, rate: float, seed: int) -> list[dict]:
    """``n`` requests with Poisson arrival times (seconds from start) and a question mix."""
    rng = random.Random(seed)
    questions = [json.loads(line) for line in open(SAMPLE / "questions.jsonl")]
    rng.shuffle(questions)
    arms, weights = zip(*MIX)
    at, items = 0.0, []
    for i in range(n):
        arm = rng.choices(arms, weights)[0]
        body = {"question": questions[i % len(questions)]["question"], "strategy": arm}
        if arm == "multi":
            body["max_hops"] = 3
        items.append({"at": at, "body": body})
        at += rng.expovariate(rate)
    return items


class ServerProcess:
    """``searchagent serve`` on a free 127.0.0.1 port; stopped with SIGTERM."""

    def __init__(self, index: Path, flags: list[str], env: dict, log: Path):
        self.log = open(log, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "searchagent", "serve", str(index), "--host", HOST,
             "--port", "0", *flags], cwd=ROOT, env=env, stdout=subprocess.PIPE,
            stderr=self.log, text=True)
        try:
            line = self.process.stdout.readline()
            if "serving" not in line:
                raise RuntimeError(f"server did not start: {line!r} (see {log})")
            self.url = line.split(" on ")[1].split()[0]
            assert self.url.startswith(f"http://{HOST}:"), self.url
            deadline = time.monotonic() + 600
            while not self.ready():
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"server never became ready (see {log})")
                time.sleep(0.5)
        except BaseException:
            self.process.kill()
            self.process.wait()
            raise

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=10).status_code == 200
        except httpx.TransportError:       # still loading: not listening yet
            return False

    def metrics(self) -> dict[str, float]:
        values = {}
        for line in httpx.get(f"{self.url}/metrics", timeout=30).text.splitlines():
            if line.startswith("searchagent_") and "{" not in line:
                name, value = line.split()
                values[name[len("searchagent_"):]] = float(value)
        return values

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


async def drive(url: str, items: list[dict], timeout_s: float) -> list[dict]:
    """Send each request at its arrival time; collect status and latency."""
    limits = httpx.Limits(max_connections=len(items) + 4)
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as client:
        start = time.monotonic()

        async def one(item: dict) -> dict:
            await asyncio.sleep(max(0.0, start + item["at"] - time.monotonic()))
            sent = time.monotonic()
            try:
                reply = await client.post("/v1/answer", json=item["body"])
                status, body = reply.status_code, reply.json()
            except httpx.HTTPError as exc:
                status, body = 0, {"error": str(exc)}
            done = time.monotonic()
            return {"arm": item["body"]["strategy"], "status": status, "sent": sent - start,
                    "done": done - start, "latency": done - sent,
                    "timings": body.get("timings", {})}
        return await asyncio.gather(*(one(item) for item in items))


def summarize(system: str, rate: float, results: list[dict], before: dict,
              after: dict) -> dict:
    ok = [r for r in results if r["status"] == 200]
    span = max(r["done"] for r in results) - min(r["sent"] for r in results)
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in METRICS}
    active = delta["active_seconds"] or 1e-9
    row = {"system": system, "rate": rate, "sent": len(results), "ok": len(ok),
           "failed": len(results) - len(ok), "throughput": len(ok) / span,
           **({f"{k}_ms": v for k, v in percentiles_ms([r["latency"] for r in ok]).items()}
              if ok else {"p50_ms": float("nan"), "p95_ms": float("nan"),
                          "p99_ms": float("nan")}),
           "idle_fraction": 1 - delta["generator_busy_seconds"] / active,
           "stall_s": delta["retrieval_stall_seconds"],
           "stall_share": delta["retrieval_stall_seconds"] / active,
           "nonstall_cuts": int(delta["nonstall_cuts_total"]),
           "kv_reuse": delta["cached_prompt_tokens_total"] / max(1.0, delta["prompt_tokens_total"]),
           "queue_wait_ms": 1000 * delta["queue_wait_seconds_sum"]
           / max(1.0, delta["queue_wait_seconds_count"])}
    row["offered"] = offered(results)
    row["sustained"] = row["failed"] == 0 and row["throughput"] >= SUSTAIN * row["offered"]
    return row


def offered(results: list[dict]) -> float:
    """The arrival rate actually offered (requests over the arrival span)."""
    sends = sorted(r["sent"] for r in results)
    return (len(sends) - 1) / max(1e-9, sends[-1] - sends[0])


def run_system(key: str, args, index: Path, env: dict) -> list[dict]:
    name, flags = SYSTEMS[key]
    flags = [*flags, "--max-queue", str(args.requests + 8), "--timeout", str(args.timeout)]
    if key != "a":
        flags += ["--sessions", str(args.sessions)]
    server = ServerProcess(index, flags, env, OUT / f"serve-{key}.log")
    rows, started = [], time.monotonic()
    try:
        warm = workload(3, 10.0, seed=99)
        asyncio.run(drive(server.url, warm, args.timeout))
        for rate in args.rates:
            if time.monotonic() - started > args.max_seconds:
                print(f"  {key}: time budget spent; skipping rate {rate}", flush=True)
                break
            before = server.metrics()
            results = asyncio.run(drive(server.url, workload(args.requests, rate, args.seed),
                                        args.timeout))
            row = summarize(key, rate, results, before, server.metrics())
            row["name"] = name
            rows.append(row)
            print(f"  {key} rate {rate}: {row['ok']}/{row['sent']} ok, "
                  f"{row['throughput']:.3f} req/s, p95 {row['p95_ms']:.0f} ms, "
                  f"idle {row['idle_fraction']:.2f}", flush=True)
    finally:
        server.stop()
    return rows


def report(rows: list[dict]) -> str:
    headers = ["system", "rate", "ok/sent", "req/s", "p50 ms", "p95 ms", "p99 ms",
               "gen idle", "stall s", "cuts", "KV reuse", "queue wait ms", "sustained"]
    body = [[f"({r['system']}) {r['name']}", r["rate"], f"{r['ok']}/{r['sent']}",
             r["throughput"], r["p50_ms"], r["p95_ms"], r["p99_ms"], r["idle_fraction"],
             r["stall_s"], r["nonstall_cuts"], r["kv_reuse"], r["queue_wait_ms"],
             "yes" if r["sustained"] else "no"] for r in rows]
    lines = [table(headers, body), ""]
    by = {key: [r for r in rows if r["system"] == key] for key in SYSTEMS}
    if by.get("a") and by.get("c"):
        best_a = max(r["throughput"] for r in by["a"])
        best_c = max(r["throughput"] for r in by["c"])
        lines.append(f"peak throughput (c)/(a): {best_c:.3f}/{best_a:.3f} = "
                     f"{best_c / best_a:.2f}x (target >= 2x)")
    if by.get("b") and by.get("c"):
        sustained = [r["rate"] for r in by["b"] if r["sustained"]]
        if sustained:
            rate = max(sustained)
            b = next(r for r in by["b"] if r["rate"] == rate)
            c = next((r for r in by["c"] if r["rate"] == rate), None)
            if c is not None:
                lines.append(f"p95 at {rate} req/s (highest rate (b) sustains): (c) "
                             f"{c['p95_ms']:.0f} ms / (b) {b['p95_ms']:.0f} ms = "
                             f"{c['p95_ms'] / b['p95_ms']:.2f} (target <= 0.5)")
        else:
            lines.append("(b) sustained none of the rates")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key, (name, _) in SYSTEMS.items():
        mine = [r for r in rows if r["system"] == key]
        if mine:
            rates = [r["rate"] for r in mine]
            left.plot(rates, [r["throughput"] for r in mine], marker="o", label=f"({key}) {name}")
            right.plot(rates, [r["p95_ms"] / 1000 for r in mine], marker="o",
                       label=f"({key}) {name}")
    left.set(xlabel="offered rate (req/s)", ylabel="throughput (req/s)", title="throughput")
    right.set(xlabel="offered rate (req/s)", ylabel="p95 latency (s)", title="p95 latency",
              yscale="log")
    left.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, default=OUT / "serve-index")
    parser.add_argument("--rates", default="0.25,0.5,1,2")
    parser.add_argument("--requests", type=int, default=16, help="requests per rate")
    parser.add_argument("--systems", default="a,b,c")
    parser.add_argument("--sessions", type=int, default=8, help="sessions for (b) and (c)")
    parser.add_argument("--backend", default="transformers", choices=["transformers", "llama_cpp"],
                        help="generator backend (transformers batches, llama_cpp does not)")
    parser.add_argument("--gen-threads", type=int, default=1, help="0 = all cores")
    parser.add_argument("--gen-model", default="default", help="GGUF file or model folder")
    parser.add_argument("--timeout", type=float, default=600.0, help="client/request timeout")
    parser.add_argument("--max-seconds", type=float, default=1200.0, help="per system")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve")
    args = parser.parse_args()
    args.rates = [float(r) for r in args.rates.split(",")]
    OUT.mkdir(exist_ok=True)
    index = ensure_index(args.index)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "SEARCHAGENT__GENERATOR__BACKEND": args.backend,
           "SEARCHAGENT__GENERATOR__THREADS": str(args.gen_threads),
           "SEARCHAGENT__GENERATOR__MODEL": args.gen_model,
           **{f"SEARCHAGENT__{k}": v for k, v in LIGHT.items()}}
    rows = []
    for key in args.systems.split(","):
        print(f"system ({key}) {SYSTEMS[key][0]}", flush=True)
        rows += run_system(key, args, index, env)
    text = report(rows)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                               "rows": rows}, indent=2))
    tmp.replace(args.out.with_suffix(".json"))
    plot(rows, args.out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
