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
