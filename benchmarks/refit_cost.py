"""What one refit of the sweep costs, at 50, 200 and 1000 runs: a refit after one more run arrived
(what the sweep does every iteration, reusing the compiled model) beside the same fit compiled from
scratch (what every refit cost before bayes_epm.sampler), in one process, same seed.

    python benchmarks/refit_cost.py                                   # 50, 200, 1000 runs
    python benchmarks/refit_cost.py --runs 30 --draws 50 --tune 50    # seconds

The fit is centred where a study centres it (fixed), so the first fit and the refit share a
structure; the cold fit empties the compiled-model cache first.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import bayes_epm.inference as inference  # first: it sets JAX's host device count
from bayes_epm import sampler
from bayes_epm.simulate import Truth, simulate_runs

TRUTH = Truth(epm={"dense": 1.0, "s0.5": 0.80, "w4a4": 0.75, "s0.5-w4a4": 0.60})


def table(n_runs: int, seed: int):
    rng = np.random.default_rng(seed)
    sizes = list(np.geomspace(1e7, 1e9, max(2, n_runs // (4 * 3))))
    runs = simulate_runs(TRUTH, sizes, [10, 20, 40], list(TRUTH.epm), rng)
    return runs.sample(n=min(n_runs, len(runs)), random_state=seed).reset_index(drop=True)


CENTRE = (float(np.log(1e8)), float(np.log(1e8 * 20)))


def timed_fit(runs, draws: int, tune: int, chains: int, seed: int) -> tuple[float, object]:
    t0 = time.perf_counter()
    _, diag = inference.fit(runs, draws=draws, tune=tune, chains=chains, seed=seed, centre=CENTRE)
    return time.perf_counter() - t0, diag


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, nargs="+", default=[50, 200, 1000])
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--tune", type=int, default=500)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print("| runs | first fit s (compiles) | refit after +1 run s (reuses) | same refit compiled cold s | "
          "cold / reuse | compile s | refit converged |")
    print("|---|---|---|---|---|---|---|")
    for n in args.runs:
        runs = table(n + 1, args.seed)
        sampler._CACHE.clear()
        first, _ = timed_fit(runs.iloc[:n], args.draws, args.tune, args.chains, args.seed)
        refit, diag = timed_fit(runs, args.draws, args.tune, args.chains, args.seed)
        sampler._CACHE.clear()
        cold, _ = timed_fit(runs, args.draws, args.tune, args.chains, args.seed)
        print(f"| {n} | {first:.1f} | {refit:.1f} | {cold:.1f} | {cold / refit:.2f}x | {cold - refit:.1f} | "
              f"{'yes' if diag.converged else '; '.join(diag.problems())} |", flush=True)

if __name__ == "__main__":
    main()
