"""How much training compute the active design needs, against the full grid, random choice and an
oracle floor, in the simulated lab (median over seeds, with the 90% HDIs' coverage of the truth).

    python benchmarks/design_efficiency.py                        # 5 seeds, batches of 8, 4 x 500 draws per refit
    python benchmarks/design_efficiency.py --seeds 1 --draws 100 --tune 100 --max-iterations 2   # a minute

Arms, each on the same truth, space, fit settings and stopping rule (every target's 90% HDI
narrower than ``--width``):

- **active**: ``bayes_epm.sweep.run_sweep`` on a simulated study, as a user runs it;
- **random**: the same loop (same initial design, batch size and refits), each batch drawn
  uniformly from the same candidate grid;
- **grid**: what the papers run, every size of the grid x every format x every tokens-per-parameter
  value (one token ratio alone cannot separate A from B: with it the grid's fit did not converge),
  fitted once; its FLOPs are what the grid costs whether or not it reaches the width;
- **oracle floor**: a design that knows the truth and greedily adds the candidate with the largest
  drop in the worst target's EPM variance per FLOP, on the linearised (Fisher) information of the
  law at the truth, starting from the model's priors (Gaussian on the same parameterisation:
  log E, centred log A and log B, alpha, beta, each target's log EPM with the sd the model's
  capacity-curve prior gives it; a composite format's log EPM is the sum of its parts, as the truth
  makes it; noise known), until the Gaussian 90% widths are under ``--width``. It needs the truth
  to linearise at, so no one can run it; and it is approximate, not a strict bound: it ignores the
  interaction, the unknown noise scale and the non-linearity the real posterior has, each of which
  only makes the real problem harder.

Ratios printed: active FLOPs / grid FLOPs (target <= 1%), active / oracle (target <= 20x), and
coverage of the truth by the final 90% HDIs (target >= 85%), each measured in this run.

``--prior-gain`` measures what a method's prior saves instead: the active sweep of a new quantizer
(``examples/new_method/mxq.py``, format ``w4:mxq``, true EPM 0.88) to the same width, with the
method's 4-bit level given (a) a vague prior, uniform on (0.01, 1.5); (b) no prior but the
callable, so its GMSE places it on the capacity curve; (c) a beta(24, 4) prior (mean 0.86, sd
0.065: a rough pilot); (d) a beta(115, 19) prior (mean 0.86, sd 0.03: a careful pilot); (e) the
posterior of a previous study (another seed, stopped at a 90% width of 0.15), law included
(``from_posterior``). Literature priors are off in all, so the arms differ only by the method's
prior; runs and FLOPs to the width are printed side by side. A prior wider than the target helps
little by construction (its precision adds to the data's): (c) is there to show that.

    python benchmarks/design_efficiency.py --prior-gain --seeds 3
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import bayes_epm.inference as inference  # first: it sets JAX's host device count
from bayes_epm.acquisition import candidates, size_grid, study_centre, target_states
from bayes_epm.config import load_config, load_truth
from bayes_epm.lab import simulate_run, true_epm
from bayes_epm.law import log_loss
from bayes_epm.gmse import log_capacity
from bayes_epm.model import Priors, factor_levels, level_gmse
from bayes_epm.models.formats import Format
from bayes_epm.store import Study
from bayes_epm.sweep import run_sweep

FORMATS = ["dense", "s0.5", "w4a4", "s0.5-w4a4"]
TARGETS = ["s0.5", "w4a4"]
TRUTH = """[law]
E = 1.8
A = 480.0
B = 2000.0
alpha = 0.34
beta = 0.36
noise_sd = {noise}

[epm]
"s0.5" = 0.80
"w4a4" = 0.75
"""
CONFIG = """seed = {seed}

[space]
formats = {formats}
targets = {targets}
params = [1e7, 1e9]
tokens_per_param = [10, 20, 40]

[budget]
flops = {budget:.6e}
hdi_width = {width}
batch = {batch}
max_iterations = {max_iterations}

[backend]
kind = "simulate"
truth = "truth.toml"

[fit]
draws = {draws}
tune = {tune}
chains = 4
"""
Z90 = 1.6448536269514722


def write_study_files(root: Path, args, seed: int, budget: float) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "truth.toml").write_text(TRUTH.format(noise=args.noise))
    fmt = lambda xs: "[" + ", ".join(f'"{x}"' for x in xs) + "]"  # noqa: E731
    (root / "study.toml").write_text(CONFIG.format(seed=seed, formats=fmt(FORMATS), targets=fmt(TARGETS),
                                                   budget=budget, width=args.width, batch=args.batch, draws=args.draws, tune=args.tune,
                                                   max_iterations=args.max_iterations))
    return root / "study.toml"


def random_choice(idata, cands: pd.DataFrame, targets, k: int, *, pending=None, hdi_width=0.0,
                  budget_left=np.inf, seed: int = 0, priors=None) -> pd.DataFrame:
    """``k`` candidates drawn uniformly (without replacement within the batch), each affordable."""
    order = np.random.default_rng(seed).permutation(len(cands))
    flops = cands["flops"].to_numpy(float)
    chosen, spent = [], 0.0
    for j in order:
        if len(chosen) == k:
            break
        if spent + flops[j] <= budget_left:
            chosen.append(int(j))
            spent += flops[j]
    return cands.iloc[chosen].assign(score=np.nan).reset_index(drop=True)


def covered(states, truth) -> list[bool]:
    return [s.lo <= true_epm(truth, s.format) <= s.hi for s in states]


def run_arm(name: str, root: Path, args, seed: int, budget: float, choose=None) -> dict:
    config = write_study_files(root / f"{name}-config", args, seed, budget)
    study = Study.create(root / f"{name}-study", config)
    t0 = time.perf_counter()
    outcome = run_sweep(study, choose=choose) if choose else run_sweep(study)
    truth = load_truth(root / f"{name}-config" / "truth.toml")
    widths = [s.hdi_width for s in outcome.targets]
    return {"arm": name, "seed": seed, "flops": outcome.flops_spent, "runs": outcome.runs,
            "reached": outcome.stopped_because == "target", "stopped": outcome.stopped_because,
            "max_width": max(widths), "covered": covered(outcome.targets, truth),
            "converged": outcome.diagnostics["converged"], "s": time.perf_counter() - t0}


def grid_arm(root: Path, args, seed: int) -> dict:
    """Every size x format x tokens per parameter, simulated with this seed, fitted once."""
    config = load_config(write_study_files(root / "grid-config", args, seed, 1e30))
    truth = load_truth(root / "grid-config" / "truth.toml")
    specs = [{"params": float(n), "tokens": float(n * t), "format": f}
             for f in FORMATS for n in size_grid(config.space) for t in config.space.tokens_per_param]
    runs = pd.DataFrame([simulate_run(truth, s, seed, i) for i, s in enumerate(specs)])
    t0 = time.perf_counter()
    idata, diag = inference.fit(runs[["params", "tokens", "loss", "format"]], draws=args.draws, tune=args.tune,
                                chains=4, seed=seed)
    states = target_states(idata, TARGETS)
    return {"arm": "grid", "seed": seed, "flops": float(runs["flops"].sum()), "runs": len(runs),
            "reached": diag.converged and max(s.hdi_width for s in states) <= args.width, "stopped": "grid done",
            "max_width": max(s.hdi_width for s in states), "covered": covered(states, truth),
            "converged": diag.converged, "s": time.perf_counter() - t0}


def model_prior_sd(fmt: str, priors: Priors, n: int = 200_000) -> float:
    """The model's prior sd of ``log rho`` for ``fmt`` (Monte Carlo through the capacity curve:
    per factor F, C, the level scatter; plus the interaction), what the oracle starts from."""
    rng = np.random.default_rng(0)
    total = np.zeros(n)
    for k, level in factor_levels(Format.parse(fmt)).items():
        F = np.exp(rng.normal(priors.F_mu, priors.curve_sigma, n))
        C = np.exp(rng.normal(priors.C_mu, priors.curve_sigma, n))
        scatter = np.abs(rng.normal(0.0, priors.level_sigma, n))
        total += log_capacity(math.log(level_gmse(k, level)), F, C) + scatter * rng.normal(size=n)
    total += np.abs(rng.normal(0.0, priors.tau_sigma, n)) * rng.normal(size=n)
    return float(total.std())


def oracle_flops(args) -> tuple[float, int]:
    """The Fisher floor (see the module docstring): FLOPs and runs of the greedy oracle design."""
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(write_study_files(Path(tmp), args, 0, 1e30))
        truth = load_truth(Path(tmp) / "truth.toml")
    m_n, m_d = study_centre(config.space)
    cands = candidates(config.space)
    priors = Priors()
    # parameters: e, a_c, b_c, alpha, beta, log rho of each target (composites: sums of targets)
    theta = np.array([math.log(truth.E), math.log(truth.A) - truth.alpha * m_n, math.log(truth.B) - truth.beta * m_d,
                      truth.alpha, truth.beta] + [math.log(true_epm(truth, t)) for t in TARGETS])
    parts = {f: [i for i, t in enumerate(TARGETS) if t in f.split("-")] for f in FORMATS}
    assert all(math.isclose(sum(theta[5 + i] for i in parts[f]), math.log(true_epm(truth, f))) for f in FORMATS)
    log_n = np.log(cands["params"].to_numpy(float)) - m_n
    log_d = np.log(cands["tokens"].to_numpy(float)) - m_d

    def mean(th: np.ndarray) -> np.ndarray:
        rho = np.array([sum(th[5 + i] for i in parts[f]) for f in cands["format"]])
        return log_loss(log_n, log_d, rho, th[1], th[2], th[0], th[3], th[4])

    eps = 1e-6
    grad = np.stack([(mean(theta + eps * e) - mean(theta - eps * e)) / (2 * eps) for e in np.eye(len(theta))], axis=1)
    exp_sd = 0.35 * priors.exponent_sigma  # LogNormal(log 0.35, 0.5) linearised at 0.35
    prior_sd = np.array([priors.e_sigma, priors.coef_sigma, priors.coef_sigma, exp_sd, exp_sd]
                        + [model_prior_sd(t, priors) for t in TARGETS])
    cov = np.diag(prior_sd ** 2)
    noise = args.noise ** 2
    rho2 = np.array([true_epm(truth, t) ** 2 for t in TARGETS])
    tgt = 5 + np.arange(len(TARGETS))
    flops = cands["flops"].to_numpy(float)
    total, n_runs = 0.0, 0
    while (2 * Z90 * np.sqrt(rho2 * np.diag(cov)[tgt])).max() > args.width:
        cg = cov @ grad.T  # (P, C)
        denom = noise + np.einsum("pc,pc->c", grad.T, cg)
        var_after = rho2[:, None] * (np.diag(cov)[tgt, None] - cg[tgt] ** 2 / denom)  # (T, C)
        var_now = rho2 * np.diag(cov)[tgt]
        drop = var_now.max() - var_after.max(axis=0) + 1e-9 * (var_now[:, None] - var_after).sum(axis=0)
        j = int(np.argmax(drop / flops))
        cov = cov - np.outer(cg[:, j], cg[:, j]) / denom[j]
        total += flops[j]
        n_runs += 1
    return total, n_runs


MXQ = Path(__file__).resolve().parents[1] / "examples" / "new_method" / "mxq.py"
PRIOR_ARMS = {
    "vague": 'w4 = { dist = "uniform", lower = 0.01, upper = 1.5 }',
    "GMSE": None,
    "rough pilot": 'w4 = { dist = "beta", alpha = 24, beta = 4 }',
    "careful pilot": 'w4 = { dist = "beta", alpha = 115, beta = 19 }',
    "previous posterior": "from_posterior",
}


def prior_arm(name: str, root: Path, args, seed: int, width: float | None = None, previous: Path | None = None) -> dict:
    """One active sweep of w4:mxq with the method prior of arm ``name`` (to ``width``, default ``--width``)."""
    root.mkdir(parents=True, exist_ok=True)
    epm = PRIOR_ARMS[name]
    text = '[method.mxq]\nkind = "quantizer"\n'
    if epm == "from_posterior":
        text += f'[method.mxq.from_posterior]\nstudy = "{previous}"\n'
    elif epm:
        text += f"[method.mxq.epm]\n{epm}\n"
    if name != "vague":
        text += f'[method.mxq.gmse]\nquantizer = "{MXQ}:mxq"\n'
    (root / "prior.toml").write_text(text)
    (root / "truth.toml").write_text(TRUTH.format(noise=args.noise).split("[epm]")[0] + '[epm]\n"w4:mxq" = 0.88\n')
    (root / "study.toml").write_text(f"""seed = {seed}
[priors]
file = "prior.toml"
literature = false
[space]
formats = ["dense", "w4:mxq"]
targets = ["w4:mxq"]
params = [1e7, 1e9]
tokens_per_param = [10, 20, 40]
[budget]
flops = 1e21
hdi_width = {width or args.width}
batch = {args.batch}
max_iterations = {args.max_iterations}
[backend]
kind = "simulate"
truth = "truth.toml"
[fit]
draws = {args.draws}
tune = {args.tune}
chains = 4
""")
    from bayes_epm.models import quantize

    quantize.unregister_method_quantizer("mxq")  # each arm registers its own mxq
    study = Study.create(root / "study", root / "study.toml")
    t0 = time.perf_counter()
    outcome = run_sweep(study)
    state = outcome.targets[0]
    study.close()
    return {"arm": name, "seed": seed, "flops": outcome.flops_spent, "runs": outcome.runs,
            "reached": outcome.stopped_because == "target", "width": state.hdi_width,
            "covered": state.lo <= 0.88 <= state.hi, "converged": outcome.diagnostics["converged"],
            "s": time.perf_counter() - t0, "study": root / "study"}


def prior_gain(args) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.out or tmp)
        for seed in range(args.seeds):
            # the previous study: another seed, stopped at a 90% width of 0.15 (its cost is not counted)
            pilot = (prior_arm("GMSE", base / f"seed{seed}" / "previous", args, 1000 + seed, width=0.15)
                     if "previous posterior" in args.arms else None)
            for name in args.arms:
                if name == "previous posterior" and not pilot["converged"]:
                    print(f"seed {seed} previous posterior: skipped, the previous study's last fit did not converge")
                    continue
                r = prior_arm(name, base / f"seed{seed}" / name.replace(" ", "_"), args, seed,
                              previous=pilot["study"] if pilot else None)
                rows.append(r)
                print(f"seed {seed} {name:18s}: {r['runs']} runs, {r['flops']:.3e} FLOPs, 90% HDI width {r['width']:.3f}"
                      f" ({'reached' if r['reached'] else 'NOT reached'}), covers 0.88: {r['covered']}, {r['s']:.0f} s",
                      flush=True)
    table = pd.DataFrame(rows)
    vague = table[table.arm == "vague"]
    print()
    print("| w4:mxq prior | median runs | median FLOPs | FLOPs / vague | reached the width | 90% HDI covers truth |")
    print("|---|---|---|---|---|---|")
    for arm in args.arms:
        t = table[table.arm == arm]
        print(f"| {arm} | {t['runs'].median():.0f} | {t['flops'].median():.3e} | "
              f"{t['flops'].median() / vague['flops'].median():.2f} | {int(t['reached'].sum())}/{len(t)} | "
              f"{int(t['covered'].sum())}/{len(t)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--width", type=float, default=0.05, help="target 90%% HDI width of every target's EPM")
    ap.add_argument("--noise", type=float, default=0.01, help="noise sd on log-loss")
    ap.add_argument("--batch", type=int, default=8, help="runs per batch (the simulated lab answers at once)")
    ap.add_argument("--draws", type=int, default=500, help="per chain (4 chains), each refit")
    ap.add_argument("--tune", type=int, default=500)
    ap.add_argument("--max-iterations", type=int, default=30)
    ap.add_argument("--out", default=None, help="keep the studies here (default: a temporary directory)")
    ap.add_argument("--prior-gain", action="store_true", help="measure what a new method's prior saves instead")
    ap.add_argument("--arms", nargs="+", choices=list(PRIOR_ARMS), default=list(PRIOR_ARMS),
                    help="with --prior-gain: the priors compared (vague, the yardstick, always among them)")
    args = ap.parse_args()
    if "vague" not in args.arms:
        ap.error("--arms must include vague: every other arm is measured against it")
    if args.prior_gain:
        prior_gain(args)
        return

    oracle, oracle_runs = oracle_flops(args)
    print(f"oracle floor: {oracle:.3e} FLOPs in {oracle_runs} runs", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.out or tmp)
        for seed in range(args.seeds):
            grid = grid_arm(base / f"seed{seed}", args, seed)
            rows.append(grid)
            for name, choose in (("active", None), ("random", random_choice)):
                rows.append(run_arm(name, base / f"seed{seed}", args, seed, budget=grid["flops"], choose=choose))
            for r in rows[-3:]:
                print(f"seed {seed} {r['arm']:6s}: {r['flops']:.3e} FLOPs, {r['runs']} runs, widest 90% HDI "
                      f"{r['max_width']:.3f} ({r['stopped']}), covers truth {sum(r['covered'])}/{len(r['covered'])}, "
                      f"last fit {'converged' if r['converged'] else 'NOT converged'}, {r['s']:.0f} s", flush=True)
    table = pd.DataFrame(rows)
    print()
    print("| arm | median FLOPs | / grid | / oracle floor | reached the width | 90% HDI covers truth |")
    print("|---|---|---|---|---|---|")
    grid_flops = float(table.loc[table.arm == "grid", "flops"].median())
    for arm in ("active", "random", "grid"):
        t = table[table.arm == arm]
        med = float(t["flops"].median())
        cov = [c for cs in t["covered"] for c in cs]
        print(f"| {arm} | {med:.3e} | {med / grid_flops:.2%} | {med / oracle:.1f}x | {int(t['reached'].sum())}/{len(t)} | "
              f"{sum(cov)}/{len(cov)} ({np.mean(cov):.0%}) |")
    print(f"| oracle floor | {oracle:.3e} | {oracle / grid_flops:.2%} | 1.0x | - | - |")
    active = table[table.arm == "active"]
    cov = np.mean([c for cs in active["covered"] for c in cs])
    ratio_grid = float(active["flops"].median()) / grid_flops
    ratio_oracle = float(active["flops"].median()) / oracle
    print()
    print(f"active / grid FLOPs:   {ratio_grid:.2%}  (target <= 1%: {'met' if ratio_grid <= 0.01 else 'NOT met'})")
    print(f"active / oracle floor: {ratio_oracle:.1f}x  (target <= 20x: {'met' if ratio_oracle <= 20 else 'NOT met'})")
    print(f"active coverage:       {cov:.0%}  (target >= 85%: {'met' if cov >= 0.85 else 'NOT met'})")
    print(f"active reached the width in {int(active['reached'].sum())}/{len(active)} seeds "
          "(a seed that stopped on budget or iterations counts its FLOPs so far: a lower bound)")


if __name__ == "__main__":
    main()
