"""A new compression method, from nothing to a posterior: register its quantizer through a prior
file, see what the priors say before any run, run a short simulated sweep, compare prior and posterior.

    python examples/new_method.py                     # about a minute on 2 cores
    python examples/new_method.py --draws 100 --tune 100 --max-iterations 1   # a quick look (not converged)

The method is ``mxq`` (``examples/new_method/mxq.py``: block absmax, a scale per 32 entries). Its
prior file (``examples/new_method/mxq_prior.toml``) gives a beta prior on its 4-bit weights (from a
pilot elsewhere) and the callable, whose error on Gaussian data places its other levels (here 2-bit
weights) on the capacity curve. The study (``examples/new_method/study.toml``) names the prior file
in ``[priors]``, so ``w4:mxq`` and ``w2:mxq`` are format names from the start; the simulated lab's
truth is in ``truth.toml``. The same with the CLI::

    bayes-epm sweep run studies/mxq --config examples/new_method/study.toml
    bayes-epm priors show studies/mxq mxq
    bayes-epm epm studies/mxq --format w4:mxq
"""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
from pathlib import Path

import bayes_epm.inference  # noqa: F401  (first: it sets JAX's host device count)
from bayes_epm.config import load_truth
from bayes_epm.lab import true_epm
from bayes_epm.posterior_store import load_fit
from bayes_epm.priors import show
from bayes_epm.queries import epm
from bayes_epm.store import Study
from bayes_epm.sweep import run_sweep

HERE = Path(__file__).resolve().parent / "new_method"


def prepare(out: Path, draws: int, tune: int, max_iterations: int) -> Path:
    """The example's study files, copied to ``out`` with the fit settings asked for."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("mxq.py", "mxq_prior.toml", "truth.toml"):
        shutil.copyfile(HERE / name, out / name)
    text = (HERE / "study.toml").read_text()
    for key, value in (("draws", draws), ("tune", tune), ("max_iterations", max_iterations)):
        text = re.sub(rf"^{key} = \d+$", f"{key} = {value}", text, flags=re.M)
    (out / "study.toml").write_text(text)
    return out / "study.toml"


def prior_quantiles(study: Study) -> dict[str, tuple[list[float], str]]:
    """Each target's prior 5/50/95% and where it comes from, before any run."""
    p = study.priors
    shown = show(study.config.priors, "mxq", {"F_mu": p.F_mu, "C_mu": p.C_mu, "curve_sigma": p.curve_sigma,
                                               "level_sigma": p.level_sigma, "quantizer_sigma": p.quantizer_sigma})
    out = {}
    for lv in shown["levels"]:
        out[lv["level"]] = (lv["quantiles_5_50_95"], lv["describe"])  # w4:mxq: the level is the format
    for g in shown["gmse"]:
        name = f"w{g['bits']}:mxq"
        if name not in out:
            out[name] = (g["epm_on_curve_prior_5_50_95"], f"GMSE {g['gmse']:.4f} on the capacity curve")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--tune", type=int, default=500)
    ap.add_argument("--max-iterations", type=int, default=12)
    ap.add_argument("--out", default=None, help="keep the study here (default: a temporary directory)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.out or tmp)
        config = prepare(base / "files", args.draws, args.tune, args.max_iterations)
        study = Study.create(base / "study", config)  # reads [priors] first: mxq is registered, measured
        targets = study.config.space.targets
        prior = prior_quantiles(study)
        print("Before any run (the priors):")
        for t in targets:
            (lo, mid, hi), how = prior[t]
            print(f"  {t}: 5/50/95% {lo:.3f} / {mid:.3f} / {hi:.3f}  ({how})")

        def on_event(kind: str, payload: dict) -> None:
            if kind == "fitted":
                widths = ", ".join(f"{s.format} {s.mean:.3f} (90% width {s.hdi_width:.3f})" for s in payload["targets"])
                print(f"  fit after {sum(payload['counts'].values())} runs: {widths}", flush=True)

        print("\nSimulated sweep:")
        outcome = run_sweep(study, on_event)
        saved = load_fit(study.posterior_dir)
        truth = load_truth(study.path / "truth.toml")
        print(f"\nstopped: {outcome.stopped_because} after {outcome.runs} runs, {outcome.flops_spent:.3g} FLOPs; "
              f"last fit {'converged' if outcome.diagnostics['converged'] else 'NOT converged'}\n")
        print("| format | truth | prior 5-95% | posterior mean | posterior 90% HDI | source |")
        print("|---|---|---|---|---|---|")
        for t in targets + ["w4a4:mxq"]:
            r = epm(saved.idata, t, 0.9, study.priors)
            lo, hi = r["hdi_90"]
            q = f"{prior[t][0][0]:.3f}-{prior[t][0][2]:.3f}" if t in prior else "-"
            true = f"{true_epm(truth, t):.3f}" if t in truth.epm else "-"
            print(f"| {t} | {true} | {q} | {r['mean']:.3f} | [{lo:.3f}, {hi:.3f}] | {r['source']} |")
        study.close()


if __name__ == "__main__":
    main()
