"""Fit each published run table and print our posterior beside the numbers its authors published.

    python examples/published_fits.py                          # the README's tables (about 5 minutes on 2 cores)
    python examples/published_fits.py --tables chinchilla      # one table
    python examples/published_fits.py --draws 100 --tune 100   # a quick look (not converged)

Published numbers (all point estimates; none of the three papers gives intervals for these):

- Chinchilla, Epoch AI's replication (Besiroglu et al. 2024, arXiv 2404.10102, their Table 1):
  A 482.01, B 2085.43, E 1.8172, alpha 0.3478, beta 0.3658; Huber (delta 1e-3) on log-loss
  residuals, L-BFGS from a grid of starts, 240 runs (the 5 highest losses dropped, as we do).
- Sparse T5 (Frantar et al., ICLR 2024): the coefficients printed by the authors' notebook
  ``jaxpruner/projects/bigsparse/sparsity-scaling.ipynb``: a_S 0.5678, b_S 0.7216, c_S 1.5227,
  b_N 0.2451, b_D 0.2027, c 0.6507, for L = (a_S (1-S)^b_S + c_S) N_nz^-b_N + (a_D/D)^b_D + c
  with N_nz the non-zero count. Our EPM counts dense parameters, so the published EPM is
  (1-S) ((a_S (1-S)^b_S + c_S)/(a_S + c_S))^(-1/b_N): 0.793, 0.539, 0.329 at S = 0.5, 0.75, 0.875.
  Their A and B use other units (N in millions, D in 1e5 steps); alpha = b_N, beta = b_D, E = c compare.
- QuEST (Panferov et al. 2025, arXiv 2502.05003): the fit printed by the authors' notebook
  ``notebooks/plots.ipynb`` (least squares on log-loss residuals): A 8.134, alpha 0.0627, B 86.41,
  beta 0.2413, E 0.0014, and one EPM per group: Hadamard W=A at 1/2/3/4/8 bits, no-Hadamard W=A,
  weight-only, and 2:4 sparse + INT4. The authors pool all Hadamard variants (trust, clip, half)
  into one EPM per bit width; our formats keep the quantizer, so several of ours share one
  published number. Their 4 FP4 runs are not in our table (see ``bayes_epm.published``).

The fits leave out the literature priors (``bayes-epm priors list``): several of its entries were
fitted on these very runs (QuEST's, and the sparse T5 values), so using them would count the same
data twice and make the comparison with the published numbers circular.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bayes_epm.inference import fit
from bayes_epm.model import Priors
from bayes_epm.models.formats import Format
from bayes_epm.published import chinchilla, quest, sparse_t5
from bayes_epm.priors import PriorSet
from bayes_epm.queries import summarize

LAW_KEYS = ("A", "B", "E", "alpha", "beta")

PUBLISHED_LAW = {
    "chinchilla": {"A": 482.01, "B": 2085.43, "E": 1.8172, "alpha": 0.3478, "beta": 0.3658},
    "sparse_t5": {"E": 0.6507, "alpha": 0.2451, "beta": 0.2027},
    "quest": {"A": 8.134, "B": 86.41, "E": 0.00142, "alpha": 0.06273, "beta": 0.2413},
}

_T5 = {"a_s": 0.56778512, "b_s": 0.72161276, "c_s": 1.52265016, "b_n": 0.24513173}


def t5_published_epm(s: float) -> float:
    """Frantar et al.'s fitted sparsity term, turned into an EPM on dense parameters."""
    ratio = (_T5["a_s"] * (1 - s) ** _T5["b_s"] + _T5["c_s"]) / (_T5["a_s"] + _T5["c_s"])
    return (1 - s) * ratio ** (-1 / _T5["b_n"])


QUEST_EPM = {  # group -> bits -> eff, as printed by the QuEST notebook
    "hadamard": {1: 0.0205046859, 2: 0.151870911, 3: 0.433126203, 4: 0.691831718, 8: 1.01619263},
    "no_hadamard": {1: 0.0155770373, 2: 0.0784119072, 3: 0.322107861, 4: 0.603270679, 8: 0.937628722},
    "weight_only": {1: 0.138419575, 2: 0.413717453, 3: 0.653058816, 4: 0.840434222},
    "2:4+int4": 0.381222089,
}


def quest_published_epm(name: str) -> float:
    fmt = Format.parse(name)
    if fmt.is_sparse:
        return QUEST_EPM["2:4+int4"]
    if fmt.a_bits >= 16:
        return QUEST_EPM["weight_only"][fmt.w_bits]
    group = "hadamard" if "hadamard" in fmt.quantizer else "no_hadamard"
    return QUEST_EPM[group][fmt.w_bits]


PUBLISHED_EPM = {
    "chinchilla": lambda name: float("nan"),
    "sparse_t5": lambda name: t5_published_epm(Format.parse(name).sparsity),
    "quest": quest_published_epm,
}

TABLES = {
    "chinchilla": lambda: chinchilla(epoch_filter=True),
    "sparse_t5": sparse_t5,
    "quest": quest,
}


def _row(name: str, draws: np.ndarray, published: float | None, hdi: float) -> str:
    s = summarize(draws, hdi)
    pub = "" if published is None or np.isnan(published) else f"{published:.4g}"
    inside = "" if not pub else ("yes" if s.lo <= published <= s.hi else "**no**")
    return f"| {name} | {s.mean:.4g} | [{s.lo:.4g}, {s.hi:.4g}] | {pub} | {inside} |"


def report(table: str, draws: int, tune: int, chains: int, seed: int, hdi: float) -> bool:
    runs, skipped = TABLES[table]()
    t0 = time.perf_counter()
    priors = Priors(methods=PriorSet(literature=False))  # not the literature: it holds some of these runs' fits
    idata, diag = fit(runs, draws=draws, tune=tune, chains=chains, seed=seed, priors=priors)
    wall = time.perf_counter() - t0
    hdi_pct = f"{hdi * 100:g}%"
    print(f"\n### {table}: {len(runs)} runs, {runs['format'].nunique()} formats"
          + (f" ({len(skipped)} rows not expressible, skipped: {sorted(set(skipped['reason']))})" if len(skipped) else ""))
    print(f"\n| quantity | ours (mean) | ours ({hdi_pct} HDI) | published | published inside HDI |")
    print("|---|---|---|---|---|")
    published_law = PUBLISHED_LAW[table]
    post = idata.posterior
    for key in LAW_KEYS:
        print(_row(key, post[key].values.ravel(), published_law.get(key), hdi))
    if "fmt" in post.coords:
        for name in post.coords["fmt"].values:
            print(_row(f"EPM {name}", post["epm"].sel(fmt=name).values.ravel(), PUBLISHED_EPM[table](str(name)), hdi))
    verdict = "converged" if diag.converged else "NOT CONVERGED: " + "; ".join(diag.problems())
    print(f"\ndiagnostics: max r-hat {diag.r_hat_max:.3f}, min bulk ESS {diag.ess_bulk_min:.0f}, "
          f"min tail ESS {diag.ess_tail_min:.0f}, {diag.divergences} divergences, {diag.chains} chains x "
          f"{diag.draws} draws, {wall:.0f} s: {verdict}")
    return diag.converged


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", nargs="+", choices=list(TABLES), default=list(TABLES))
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--tune", type=int, default=1000)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hdi", type=float, default=0.9)
    args = ap.parse_args()
    converged = [report(t, args.draws, args.tune, args.chains, args.seed, args.hdi) for t in args.tables]
    if not all(converged):
        print("\nsome fits did not converge: read their diagnostics before their numbers")


if __name__ == "__main__":
    main()
