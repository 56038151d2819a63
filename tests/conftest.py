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
