"""Known-truth recovery: the central test of the Bayesian model (small draws, two chains)."""

import numpy as np
import pytest



@pytest.fixture(scope="module")
def posterior(fitted):
    return fitted["idata"], fitted["diagnostics"]


@pytest.fixture(scope="module")
def TRUTH(fitted):
    return fitted["truth"]


def _hdi(draws, prob=0.9):
    import arviz as az

    return az.hdi(np.asarray(draws).ravel(), hdi_prob=prob)


def test_sampler_is_healthy(posterior):
    _, diag = posterior
    assert diag.divergences == 0
    assert diag.r_hat_max <= 1.01
    assert diag.ess_bulk_min >= 400 and diag.ess_tail_min >= 400
    assert diag.converged and diag.problems() == []


def test_law_and_epms_are_recovered(posterior, TRUTH):
    idata, _ = posterior
    post = idata.posterior
    for name in ("alpha", "beta", "E"):
        lo, hi = _hdi(post[name].values, 0.95)
        assert lo <= getattr(TRUTH, name) <= hi, name
    covered = 0
    for fmt, rho in TRUTH.epm.items():
        if fmt == "dense":
            continue
        draws = post["epm"].sel(fmt=fmt).values
        lo, hi = _hdi(draws)
        covered += lo <= rho <= hi
        assert abs(np.median(draws) - rho) < 0.05, fmt
    assert covered >= 3  # 90% intervals: 3 of 4 at least


def test_diagnostics_flag_a_bad_fit():
    from bayes_epm.inference import Diagnostics

    bad = Diagnostics(r_hat_max=1.05, ess_bulk_min=50, ess_tail_min=500, divergences=3, chains=2, draws=100,
                      converged=False, sampling_s=1.0, chain_method="parallel")
    text = "; ".join(bad.problems())
    assert "r-hat 1.050" in text and "bulk ESS 50" in text and "3 divergent" in text


def _table(formats):
    import pandas as pd

    return pd.DataFrame({"params": 1e8, "tokens": 1e9, "loss": 3.0, "format": ["dense", *formats]})


def test_quantizer_scales_only_with_two_or_more_quantizers():
    from bayes_epm.model import build_model

    one = build_model(_table(["w4", "w4a4"]))
    assert "gamma" not in one.named_vars and "quantizer" not in one.coords
    two = build_model(_table(["w4", "w4a4:absmax", "s0.5"]))
    assert list(two.coords["quantizer"]) == ["absmax", "rms"]
    assert type(two["gamma"].owner.op).__name__ == "ZeroSumNormalRV"


def test_unseen_quantizer_is_less_certain_than_a_seen_one(fitted):
    from bayes_epm.queries import epm

    seen, unseen = epm(fitted["idata"], "w3"), epm(fitted["idata"], "w3:absmax")
    assert not seen["observed"] and not unseen["observed"]
    assert unseen["sd"] > 1.2 * seen["sd"]  # the unseen quantizer's scale comes from its prior


def test_quantizer_effect_is_recovered():
    """Two quantizers whose curves differ (F scaled by e^0.25 and e^-0.25): the posterior orders
    them, and a bit width never trained is predicted lower for the worse quantizer."""
    import math

    from bayes_epm.gmse import log_capacity
    from bayes_epm.inference import fit
    from bayes_epm.model import factor_levels, level_gmse
    from bayes_epm.models.formats import Format
    from bayes_epm.queries import compare
    from bayes_epm.simulate import Truth, simulate_runs

    gamma = {"rms": 0.25, "absmax": -0.25}

    def rho(name):
        return math.exp(sum(float(log_capacity(math.log(level_gmse(k, lv)), 0.41 * math.exp(gamma[lv.split(":")[1]]),
                                               1.39)) for k, lv in factor_levels(Format.parse(name)).items()))

    formats = ["w2", "w4", "w2a4", "w2:absmax", "w4:absmax", "w2a4:absmax"]
    truth = Truth(noise_sd=0.005, epm={"dense": 1.0, **{f: rho(f) for f in formats}})
    runs = simulate_runs(truth, list(np.geomspace(1e7, 1e9, 3)), [10, 40, 80], list(truth.epm),
                         np.random.default_rng(1))
    idata, diag = fit(runs, draws=500, tune=500, chains=2, seed=0)
    assert diag.divergences == 0 and diag.r_hat_max <= 1.02
    g = idata.posterior["gamma"]
    assert float((g.sel(quantizer="rms") > g.sel(quantizer="absmax")).mean()) > 0.95
    out = compare(idata, "w3", "w3:absmax")  # neither trained
    assert out["p_a_greater"] > 0.9
