"""Shared fixtures. Ray is started once per test session, with logical GPUs declared so that GPU
resource requests can be tested on a machine without one (DESIGN.md)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ray_local():
    import ray

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture()
def tiny_spec_kw():
    """Arguments of a training run that takes about a second on a CPU."""
    return dict(params=2e4, tokens=2e4, batch_size=8, context=64, eval_tokens=4096)


@pytest.fixture(scope="session")
def fitted(tmp_path_factory):
    """One posterior of simulated runs with a known truth, shared by the inference and query tests."""
    import numpy as np

    from bayes_epm.inference import fit
    from bayes_epm.model import Priors
    from bayes_epm.posterior_store import save_fit
    from bayes_epm.simulate import Truth, simulate_runs

    truth = Truth(epm={"dense": 1.0, "s0.5": 0.80, "w4a4": 0.75, "s0.5-w4a4": 0.60, "w4": 0.90})
    runs = simulate_runs(truth, list(np.geomspace(1e7, 1e9, 4)), [10, 20, 40, 80], list(truth.epm),
                         np.random.default_rng(0))
    idata, diag = fit(runs, draws=1000, tune=600, chains=2, seed=3)
    out = tmp_path_factory.mktemp("fit")
    save_fit(out, idata, runs, diag, Priors(), {"draws": 1000, "tune": 600, "chains": 2, "seed": 3})
    return {"truth": truth, "runs": runs, "idata": idata, "diagnostics": diag, "dir": out}


@pytest.fixture()
def cli_json(capsys):
    """``cli_json(argv)``: run the CLI with ``--json``; it must exit 0; its output, parsed."""
    import json

    from bayes_epm.cli import main

    def run(argv: list[str]):
        with pytest.raises(SystemExit) as exc:
            main(argv + ["--json"])
        captured = capsys.readouterr()
        assert exc.value.code == 0, captured.err
        return json.loads(captured.out)
    return run
