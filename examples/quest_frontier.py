"""Where lower precision stops paying, on the QuEST runs, next to the authors' reported optimum.

    python examples/quest_frontier.py                       # the README's numbers (about 4 minutes on 2 cores)
    python examples/quest_frontier.py --draws 200 --tune 200   # a quick look (not converged)

Fits the QuEST table (Panferov et al. 2025, arXiv 2502.05003: weights and activations quantized
together at 1-8 bits, weight-only, 2:4 sparse + INT4; 30M-800M parameters) with the literature
priors off (some were fitted on these very runs), saves the fit to ``--out`` (so that
``bayes-epm frontier OUT`` and ``bayes-epm recommend OUT`` answer from it) and prints the frontier:
stored bits per *effective* parameter of every format (bits per parameter / EPM; under a memory
budget, the format with the fewest reaches the lowest loss at every size), the probability that
each step to fewer bits pays, and the plot ``OUT/frontier.png``.

The authors' optimum: QuEST "demonstrate[s] optimality at 4-bits" for weights and activations
(abstract). Their criterion is the same one: the precision P minimising P / eff(P), with eff(P) the
EPM of their notebook's fit (``examples/published_fits.py``): Hadamard W=A at 1/2/3/4/8 bits gives
48.8 / 13.2 / 6.93 / 5.78 / 7.87 bits per effective parameter, a minimum at 4 bits.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from published_fits import QUEST_EPM  # the authors' eff(P) (same folder)

from bayes_epm.decisions import frontier
from bayes_epm.inference import fit
from bayes_epm.model import Priors
from bayes_epm.models.formats import Format
from bayes_epm.plots import plot_frontier
from bayes_epm.posterior_store import load_fit, save_fit
from bayes_epm.priors import PriorSet
from bayes_epm.published import quest


def authors_bits_per_effective_param(name: str) -> float | None:
    """P / eff(P) from the QuEST notebook for a W=A format (weights stored at P bits)."""
    fmt = Format.parse(name)
    if fmt.is_sparse or fmt.w_bits != fmt.a_bits:
        return None
    group = QUEST_EPM["hadamard" if "hadamard" in fmt.quantizer else "no_hadamard"]
    return fmt.w_bits / group[fmt.w_bits] if fmt.w_bits in group else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=2000, help="draws per chain (QuEST needs 2000 for tail ESS)")
    ap.add_argument("--tune", type=int, default=1000)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="quest_fit", help="directory for the fit and frontier.png")
    args = ap.parse_args()

    runs, skipped = quest()
    print(f"QuEST: {len(runs)} runs, {runs['format'].nunique()} formats ({len(skipped)} FP4 runs not expressible, "
          "skipped)")
    priors = Priors(methods=PriorSet(literature=False))
    t0 = time.perf_counter()
    idata, diag = fit(runs, draws=args.draws, tune=args.tune, chains=args.chains, seed=args.seed, priors=priors)
    save_fit(args.out, idata, runs, diag, priors, {"draws": args.draws, "tune": args.tune, "chains": args.chains,
                                                   "seed": args.seed})
    verdict = "converged" if diag.converged else "NOT CONVERGED: " + "; ".join(diag.problems())
    print(f"fit: {time.perf_counter() - t0:.0f} s, max r-hat {diag.r_hat_max:.3f}, min bulk ESS {diag.ess_bulk_min:.0f}, "
          f"min tail ESS {diag.ess_tail_min:.0f}, {diag.divergences} divergences: {verdict}")

    result = frontier(load_fit(args.out))
    print(f"\nstored bits per effective parameter ({result['regime']['description'].split(' (')[0]}; "
          f"bits per parameter at {result['reference_params']:.3g} parameters):\n")
    print("| format | family | bits/param | EPM [90% HDI] | bits per effective param [90% HDI] | P(fewest) | authors' P/eff(P) |")
    print("|---|---|---|---|---|---|---|")
    for r in result["formats"]:
        e, b = r["epm"], r["bits_per_effective_param"]
        theirs = authors_bits_per_effective_param(r["format"])
        print(f"| {r['format']} | {r['family']} | {r['bits_per_param']:.2f} | {e['mean']:.3f} [{e['hdi_90'][0]:.3f}, "
              f"{e['hdi_90'][1]:.3f}] | {b['mean']:.2f} [{b['hdi_90'][0]:.2f}, {b['hdi_90'][1]:.2f}] | "
              f"{r['p_lowest']:.3f} | {'' if theirs is None else f'{theirs:.2f}'} |")
    print("\nsteps to fewer bits (P(pays) = P(the step lowers the bits per effective parameter)):\n")
    for s in result["steps"]:
        print(f"- {s['family']}: {s['from']} -> {s['to']}: P(pays) {s['p_pays']:.3f}, {s['verdict']}")
    print("\nwho wins where (most probable best at each memory budget):\n")
    for g in result["regions"]:
        print(f"- {g['from_bytes']:.3g} to {g['to_bytes']:.3g} bytes: {g['format']} ({g['family']}), "
              f"P(best) >= {g['p_best_min']:.2f}")
    by_bits: dict[int, float] = {}
    for r in result["formats"]:
        if r["family"] == "weights+activations":
            bits = Format.parse(r["format"]).w_bits
            by_bits[bits] = by_bits.get(bits, 0.0) + r["p_lowest_in_family"]
    authors = QUEST_EPM["hadamard"]
    print("\nweights+activations, P(this bit width stores the fewest bits per effective parameter): "
          + ", ".join(f"{b} bits {p:.3f}" for b, p in sorted(by_bits.items(), reverse=True)))
    print(f"the authors' optimum: {min(authors, key=lambda p: p / authors[p])} bits (P / eff(P): "
          + ", ".join(f"{p / eff:.2f} at {p}" for p, eff in sorted(authors.items(), reverse=True)) + ")")
    png = plot_frontier(result, Path(args.out) / "frontier.png")
    print(f"plot: {png}")
    if not diag.converged:
        print("\nthe fit did NOT converge (see its diagnostics above): read these numbers as a sketch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
