"""Many concurrent EPM queries against `bayes-epm serve`, first on a quiet study, then while a
simulated sweep writes to the same study (new runs, refits swapped in): p50/p99 latency, throughput
and errors of both, side by side in one run.

    python benchmarks/service_load.py                     # 8 clients; 800 queries, then queries through 2 refits
    python benchmarks/service_load.py --clients 2 --queries 24 --draws 100 --refits 1   # a smoke run

The server is the real one (uvicorn, HTTP on loopback, a bearer token), started as a user would;
the sweep is `bayes-epm sweep resume` on the simulated lab, in its own process. Queries cycle
through observed formats (read from the posterior) and unseen ones (predicted from the hierarchy).
On 2 cores the sweep's refits take both cores, so the writing phase measures contention for the CPU
as much as anything the service does; errors must be zero in both phases (exit status 1 otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

TOKEN = "benchmark-token-0123456789abcdef"
FORMATS = ["s0.5", "w4a4", "s0.5-w4a4", "w8a8", "s0.75", "w4"]  # observed, then predicted
CONFIG = """
seed = 7
[space]
formats = ["dense", "s0.5", "w4a4", "s0.5-w4a4"]
targets = ["s0.5", "w4a4"]
params = [1e7, 1e9]
tokens_per_param = [10, 20, 40]
[budget]
flops = 1e30
hdi_width = 0.001
batch = 2
max_iterations = 1000
[backend]
kind = "simulate"
truth = "truth.toml"
[fit]
draws = {draws}
tune = {draws}
chains = 2
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[float, int, float]:
    """(latency in s, HTTP status or -1, start time)."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            json.load(r)
            code = r.status
    except urllib.error.HTTPError as err:
        code = err.code
    except OSError:
        code = -1
    return time.perf_counter() - t0, code, t0


def _phase(base: str, clients: int, queries: int, until=lambda: True, limit_s: float = 900.0) -> dict:
    """``queries`` EPM queries from ``clients`` threads, repeated until ``until()`` holds (or ``limit_s``)."""
    urls = [f"{base}/studies/bench/epm?format={FORMATS[i % len(FORMATS)]}" for i in range(queries)]
    results = []
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        while True:
            results += list(pool.map(_get, urls))
            if until() or time.perf_counter() - t0 > limit_s:
                break
    wall = time.perf_counter() - t0
    queries = len(results)
    lat = np.array([r[0] for r in results]) * 1e3
    errors = sum(1 for r in results if r[1] != 200)
    slowest = sorted(results, reverse=True)[:3]
    return {"p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "max_ms": float(lat.max()), "per_s": queries / wall, "errors": errors, "queries": queries,
            "slowest": [(r[0] * 1e3, r[2]) for r in slowest]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--queries", type=int, default=800, help="queries per phase")
    ap.add_argument("--draws", type=int, default=500, help="draws (and tuning steps) per chain of each refit")
    ap.add_argument("--refits", type=int, default=2,
                    help="the writing phase goes on (in rounds of --queries) until the sweep swapped in this many refits")
    args = ap.parse_args()

    from bayes_epm.simulate import Truth, simulate_runs, truth_file
    from bayes_epm.store import Study
    from bayes_epm.sweep import fit_study

    truth = Truth(epm={"dense": 1.0, "s0.5": 0.8, "w4a4": 0.75, "s0.5-w4a4": 0.6})
    work = Path(tempfile.mkdtemp(prefix="service-load-"))
    (work / "truth.toml").write_text(truth_file(truth))
    (work / "study.toml").write_text(CONFIG.format(draws=args.draws))
    study = work / "studies" / "bench"
    t0 = time.perf_counter()
    with Study.create(study, work / "study.toml") as st:
        st.import_runs(simulate_runs(truth, list(np.geomspace(1e7, 1e9, 3)), [10, 40], list(truth.epm),
                                     np.random.default_rng(0)), "simulated")
        fit_study(st)
    print(f"study: 24 simulated runs, first fit in {time.perf_counter() - t0:.0f} s")

    port = _free_port()
    env = {**os.environ, "BAYES_EPM_TOKEN": TOKEN}
    cli = [sys.executable, "-m", "bayes_epm.cli"]
    server = subprocess.Popen([*cli, "serve", "--port", str(port), "--studies", str(work / "studies")], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    sweep = None
    try:
        deadline = time.time() + 120
        while _get(f"{base}/health")[1] != 200:
            if server.poll() is not None or time.time() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.3)
        _phase(base, 1, len(FORMATS))  # warm: the first read of the fit and the imports
        idle = _phase(base, args.clients, args.queries)

        first = int((study / "posterior").resolve().name)

        def refits() -> int:
            return int((study / "posterior").resolve().name) - first

        swaps: list[float] = []  # when each refit was swapped in (polled)
        watching = threading.Event()

        def watch() -> None:
            seen = first
            while not watching.is_set():
                now = int((study / "posterior").resolve().name)
                if now != seen:
                    swaps.append(time.perf_counter())
                    seen = now
                time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        sweep = subprocess.Popen([*cli, "sweep", "resume", str(study)], env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        with Study.open(study) as st:
            done_before = st.counts()["done"]
        time.sleep(2)  # the sweep is proposing and landing runs
        writing = _phase(base, args.clients, args.queries, until=lambda: refits() >= args.refits)
        watching.set()
        with Study.open(study) as st:
            landed = st.counts()["done"] - done_before
        swapped = refits()
    finally:
        for proc in (sweep, server):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=60)

    print(f"\n{args.clients} concurrent clients, EPM queries ({', '.join(FORMATS)}, cycled): {idle['queries']} on the "
          f"quiet study, {writing['queries']} while the sweep landed {landed} runs and swapped in {swapped} refits\n")
    print("| phase | p50 ms | p99 ms | max ms | queries/s | errors |")
    print("|---|---|---|---|---|---|")
    for name, r in (("quiet study", idle), ("sweep writing", writing)):
        print(f"| {name} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} | {r['per_s']:.0f} | "
              f"{r['errors']} |")
    for ms, start in writing["slowest"]:
        near = min((abs(start - t) for t in swaps), default=None)  # the watcher polls every 0.05 s
        when = f"{near:.2f} s from a refit's swap" if near is not None else "with no swap yet"
        print(f"slowest while writing: {ms:.0f} ms, sent {when}")
    print(f"\nwriting / quiet: p50 x{writing['p50_ms'] / idle['p50_ms']:.2f}, p99 x{writing['p99_ms'] / idle['p99_ms']:.2f}")
    errors = idle["errors"] + writing["errors"]
    print(f"errors: {errors}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
