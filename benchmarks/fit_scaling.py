"""Fit time against the number of runs and of formats, on simulated run tables.

For each (runs, formats) pair the script simulates a table from a known law (sizes log-uniform in
[1e7, 1e9], 5 to 100 tokens per parameter, formats drawn uniformly, 1% noise on log L; the true EPM
of a format is the product of its factors' values on the capacity curve), fits it, and prints the
wall time (model build, compilation and sampling), the time per 1000 gradient evaluations, the
minimum bulk ESS per second and the diagnostics. It ends with the growth exponent of the wall time
in the number of runs (time ~ runs^k) at each number of formats.

    python benchmarks/fit_scaling.py                                      # 100/1000/5000 runs x 5/30 formats
    python benchmarks/fit_scaling.py --runs 50 100 --formats 3 --draws 100 --tune 100 --chains 2   # seconds
"""

from __future__ import annotations

import argparse
import itertools
import math
import time

import numpy as np
import pandas as pd

import bayes_epm.inference as inference  # first: it sets JAX's host device count
from bayes_epm.gmse import log_capacity
from bayes_epm.law import loss
from bayes_epm.model import factor_levels, level_gmse
from bayes_epm.models.formats import Format

SPARSITIES = ("", "s0.25-", "s0.5-", "s0.75-", "2:4-")
QUANT = ("", "w8", "w4", "w3", "w2", "w8a8", "w4a4", "w4a8")


def format_pool(n: int) -> list[str]:
    """``n`` distinct non-dense formats (combinations of sparsity and bits), always the same ones."""
    names = [Format.parse((s + q).strip("-")).name for q, s in itertools.product(QUANT, SPARSITIES) if s + q]
    if n > len(names):
        raise SystemExit(f"--formats {n}: at most {len(names)} formats are available")
    return names[:n]


def true_epm(name: str) -> float:
    """Product over the format's factors of the capacity curve (F 0.41, C 1.39) at the level's GMSE."""
    return math.exp(sum(float(log_capacity(math.log(level_gmse(k, lv)), 0.41, 1.39))
                        for k, lv in factor_levels(Format.parse(name)).items()))


def simulate(n_runs: int, formats: list[str], seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    params = np.exp(rng.uniform(math.log(1e7), math.log(1e9), n_runs))
    tokens = params * np.exp(rng.uniform(math.log(5), math.log(100), n_runs))
    names = ["dense", *formats]
    fmt = [names[i] for i in rng.integers(0, len(names), n_runs)]
    rho = np.array([1.0 if f == "dense" else true_epm(f) for f in fmt])
    mean = loss(params, tokens, rho, 480.0, 2000.0, 1.8, 0.34, 0.36)
    return pd.DataFrame({"params": params, "tokens": tokens, "format": fmt,
                         "loss": mean * np.exp(rng.normal(0.0, 0.01, n_runs))})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, nargs="+", default=[100, 1000, 5000])
    ap.add_argument("--formats", type=int, nargs="+", default=[5, 30])
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--tune", type=int, default=1000)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    print("| runs | formats | wall s | s per 1000 gradients (est.) | mean tree depth | min bulk ESS / s | r-hat | divergences | converged |")
    print("|---|---|---|---|---|---|---|---|---|")
    walls: dict[int, list[tuple[int, float]]] = {}
    for n_formats, n_runs in itertools.product(args.formats, args.runs):
        runs = simulate(n_runs, format_pool(n_formats), args.seed)
        t0 = time.perf_counter()
        idata, d = inference.fit(runs, draws=args.draws, tune=args.tune, chains=args.chains, seed=args.seed)
        wall = time.perf_counter() - t0
        steps = int(idata.sample_stats["n_steps"].sum()) if "n_steps" in idata.sample_stats else 0
        depth = float(idata.sample_stats["tree_depth"].mean()) if "tree_depth" in idata.sample_stats else float("nan")
        # leapfrog steps are recorded for kept draws only: count tuning at the same rate (an estimate)
        per_1000 = 1000 * d.sampling_s / (steps * (1 + args.tune / args.draws)) if steps else float("nan")
        walls.setdefault(n_formats, []).append((n_runs, wall))
        print(f"| {n_runs} | {n_formats} | {wall:.1f} | {per_1000:.3f} | {depth:.1f} | {d.ess_bulk_min / wall:.1f} | "
              f"{d.r_hat_max:.3f} | {d.divergences} | {'yes' if d.converged else 'NO: ' + '; '.join(d.problems())} |",
              flush=True)
    print()
    for n_formats, pts in walls.items():
        if len(pts) > 1:
            x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
            k = np.polyfit(x, y, 1)[0]
            print(f"{n_formats} formats: wall time grows as runs^{k:.2f} from {pts[0][0]} to {pts[-1][0]} runs")


if __name__ == "__main__":
    main()
