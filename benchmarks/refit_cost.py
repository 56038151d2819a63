"""What one refit of the sweep costs, at 50, 200 and 1000 runs: a first fit, then a refit after one
more run arrived (what the sweep does every iteration), side by side, and the sampling-free
fixed cost (a 10-draw fit) that a refit reusing the compiled model would no longer pay.

    python benchmarks/refit_cost.py                                   # 50, 200, 1000 runs
    python benchmarks/refit_cost.py --runs 30 --draws 50 --tune 50    # seconds

Today every refit rebuilds and recompiles the model (PyMC's NumPyro path bakes the data into the
jitted log-density); the issue's target is a refit that reuses the compiled model when only the
data grew. This script is the measurement either way.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import bayes_epm.inference as inference  # first: it sets JAX's host device count
from bayes_epm.simulate import Truth, simulate_runs

TRUTH = Truth(epm={"dense": 1.0, "s0.5": 0.80, "w4a4": 0.75, "s0.5-w4a4": 0.60})


def table(n_runs: int, seed: int):
    rng = np.random.default_rng(seed)
    sizes = list(np.geomspace(1e7, 1e9, max(2, n_runs // (4 * 3))))
    runs = simulate_runs(TRUTH, sizes, [10, 20, 40], list(TRUTH.epm), rng)
    return runs.sample(n=min(n_runs, len(runs)), random_state=seed).reset_index(drop=True)


def timed_fit(runs, draws: int, tune: int, chains: int, seed: int) -> float:
    t0 = time.perf_counter()
    inference.fit(runs, draws=draws, tune=tune, chains=chains, seed=seed)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, nargs="+", default=[50, 200, 1000])
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--tune", type=int, default=500)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print("| runs | first fit s | refit after +1 run s | refit / first | 10-draw fit s (fixed cost) |")
    print("|---|---|---|---|---|")
    for n in args.runs:
        runs = table(n + 1, args.seed)
        first = timed_fit(runs.iloc[:n], args.draws, args.tune, args.chains, args.seed)
        refit = timed_fit(runs, args.draws, args.tune, args.chains, args.seed)
        fixed = timed_fit(runs, 10, 10, args.chains, args.seed)
        print(f"| {n} | {first:.1f} | {refit:.1f} | {refit / first:.2f} | {fixed:.1f} |", flush=True)


if __name__ == "__main__":
    main()
