"""The compiled sampler: padding changes nothing, a refit on grown data compiles nothing."""

import numpy as np
import pytest

import bayes_epm.inference  # noqa: F401  (first: it sets JAX's host device count)


def _runs(n, seed=0):
    from bayes_epm.simulate import Truth, simulate_runs

    truth = Truth(noise_sd=0.01, epm={"dense": 1.0, "s0.5": 0.8, "w4a4": 0.75})
    runs = simulate_runs(truth, list(np.geomspace(1e7, 1e9, 6)), [10, 20, 40], list(truth.epm),
                         np.random.default_rng(seed))
    return runs.sample(n=n, random_state=seed).reset_index(drop=True)


def test_bucket_is_the_next_power_of_two():
    from bayes_epm.sampler import MIN_BUCKET, bucket

    assert bucket(1) == MIN_BUCKET and bucket(MIN_BUCKET) == MIN_BUCKET
    assert bucket(MIN_BUCKET + 1) == 2 * MIN_BUCKET and bucket(1000) == 1024 and bucket(1024) == 1024


def test_padded_runs_weigh_nothing():
    """The log-density (and its gradient) of the padded model equals the unpadded one's at random points."""
    import jax

    from bayes_epm.model import ModelData, Priors
    from bayes_epm.sampler import CompiledModel, Settings

    runs, priors, settings = _runs(40), Priors(), Settings(10, 10, 2, 0.9, False)
    data = ModelData.from_runs(runs)
    exact, padded = CompiledModel(data, priors, 40, settings), CompiledModel(data, priors, 128, settings)
    assert exact.dim == padded.dim
    x_exact = tuple(jax.numpy.asarray(v) for v in data.inputs(priors, 40).values())
    x_padded = tuple(jax.numpy.asarray(v) for v in data.inputs(priors, 128).values())
    assert x_padded[0].shape == (128,) and float(x_padded[4].sum()) == 40.0
    rng = np.random.default_rng(0)
    for _ in range(5):
        theta = jax.numpy.asarray(rng.normal(0, 0.5, exact.dim))
        a, b = exact._log_density(theta, x_exact), padded._log_density(theta, x_padded)
        assert np.isfinite(float(a)) and float(a) == pytest.approx(float(b), rel=1e-9)
        ga = jax.grad(exact._log_density)(theta, x_exact)
        gb = jax.grad(padded._log_density)(theta, x_padded)
        np.testing.assert_allclose(np.asarray(ga), np.asarray(gb), rtol=1e-8, atol=1e-10)


def test_padding_more_runs_than_the_bucket_is_refused():
    from bayes_epm.model import ModelData, Priors

    with pytest.raises(ValueError, match="smaller than the 40 runs"):
        ModelData.from_runs(_runs(40)).inputs(Priors(), 32)


def test_refit_on_grown_data_reuses_the_compiled_program():
    """What the sweep does every iteration: same formats, fixed centring, a few more runs. The chain
    program is traced once; the second fit answers from the new data (its posterior moves)."""
    from bayes_epm import sampler
    from bayes_epm.inference import fit

    from bayes_epm.model import ModelData, Priors

    runs = _runs(45)
    centre = (float(np.log(1e8)), float(np.log(2e9)))
    settings = sampler.Settings(draws=60, tune=60, chains=2, target_accept=0.9, dense_mass=False)
    idata1, d1 = fit(runs.iloc[:40], draws=60, tune=60, chains=2, seed=1, centre=centre)
    cm = sampler.compiled(ModelData.from_runs(runs.iloc[:40], centre), Priors(), settings)
    assert cm.traces == 1 and cm.pad_to == 64
    cached = len(sampler._CACHE)
    idata2, d2 = fit(runs, draws=60, tune=60, chains=2, seed=1, centre=centre)
    assert sampler.compiled(ModelData.from_runs(runs, centre), Priors(), settings) is cm  # the same program
    assert len(sampler._CACHE) == cached and cm.traces == 1  # nothing built or traced again
    assert idata1.observed_data["log_loss"].size == 40 and idata2.observed_data["log_loss"].size == 45
    assert not np.allclose(idata1.posterior["alpha"].values, idata2.posterior["alpha"].values)
    assert d2.chain_method == cm.chain_method and d2.draws == 60 and d2.chains == 2
    # a data-centred fit (no fixed centre) is a different structure: a new compiled model
    fit(runs, draws=60, tune=60, chains=2, seed=1)
    assert cm.traces == 1 and sum(c.settings.draws == 60 for c in sampler._CACHE.values()) >= 2


def test_same_seed_same_posterior():
    from bayes_epm.inference import fit

    runs = _runs(30)
    a, _ = fit(runs, draws=30, tune=30, chains=2, seed=3)
    b, _ = fit(runs, draws=30, tune=30, chains=2, seed=3)
    np.testing.assert_array_equal(a.posterior["epm"].values, b.posterior["epm"].values)
