"""The Ray task: real training through Ray, GPU requests, retries of crashed workers."""

import os
from pathlib import Path

import pytest

from bayes_epm.workers.ray_task import as_completed, num_gpus_for, result_of, run_many, submit
from bayes_epm.workers.spec import RunResult, TrainSpec
from bayes_epm.workers.train import failed_result

pytestmark = pytest.mark.ray


def test_train_through_ray(ray_local, tiny_spec_kw):
    specs = [TrainSpec(**tiny_spec_kw, format=f) for f in ("dense", "w4a4")]
    results = run_many(specs)
    assert [r.format for r in results] == ["dense", "w4a4"]
    assert all(r.status == "ok" for r in results)
    assert {r.node for r in results} == {ray_local.get_runtime_context().get_node_id()}  # where it trained


def test_gpu_request(ray_local, tiny_spec_kw):
    def report_gpus(spec):
        import ray

        gpus = ray.get_gpu_ids()
        return failed_result(TrainSpec.from_dict(spec), f"gpus={gpus} device={spec['device']}")

    spec = TrainSpec(**tiny_spec_kw, device="cuda:1")
    assert num_gpus_for(spec) == 1
    got = result_of(submit(spec, fn=report_gpus), spec)
    assert got.error == "gpus=[0] device=cuda"  # Ray gave the task the (logical) GPU, renumbered from 0
    for device in ("cpu", "auto"):  # no GPU reserved: train on the CPU, never on a GPU another task holds
        cpu = TrainSpec(**tiny_spec_kw, device=device)
        assert result_of(submit(cpu, fn=report_gpus, num_gpus=0), cpu).error == "gpus=[] device=cpu"
    assert num_gpus_for(TrainSpec(**tiny_spec_kw, device="auto")) == 1  # the cluster declares a GPU
    assert num_gpus_for(TrainSpec(**tiny_spec_kw, device="auto"), cluster_gpus=0) == 0


def _crash_first_time(marker: str):
    def fn(spec):
        path = Path(marker)
        if not path.exists():
            path.write_text("crashed once")
            os._exit(1)  # the worker process dies, as on a segfault or an OOM kill
        from bayes_epm.workers.train import run_spec

        return run_spec(spec)

    return fn


def test_crashed_worker_is_retried(ray_local, tiny_spec_kw, tmp_path):
    spec = TrainSpec(**tiny_spec_kw)
    result = result_of(submit(spec, fn=_crash_first_time(str(tmp_path / "marker")), max_retries=1), spec)
    assert (tmp_path / "marker").exists()
    assert result.status == "ok"


def test_worker_that_keeps_crashing_becomes_a_failed_result(ray_local, tiny_spec_kw):
    def always_crash(spec):
        os._exit(1)

    spec = TrainSpec(**tiny_spec_kw)
    result = result_of(submit(spec, fn=always_crash, max_retries=1), spec)
    assert isinstance(result, RunResult)
    assert result.status == "failed" and "Worker" in result.error and result.format == spec.format


def test_results_arrive_in_completion_order(ray_local, tiny_spec_kw, tmp_path):
    marker = str(tmp_path / "fast-done")

    def ordered(spec):  # seed 1 finishes only after seed 0 has, however slowly workers start
        import time

        path = Path(marker)
        if spec["seed"] == 0:
            path.write_text("done")
        else:
            deadline = time.monotonic() + 120
            while not path.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(2.0)
        return failed_result(TrainSpec.from_dict(spec), f"seed {spec['seed']}")

    # device="cpu": with "auto" both would queue for the session's single (logical) GPU
    specs = [TrainSpec(**tiny_spec_kw, seed=1, device="cpu"), TrainSpec(**tiny_spec_kw, seed=0, device="cpu")]
    pending = {submit(s, fn=ordered): s for s in specs}
    order = [res.error for _, res in as_completed(pending)]
    assert order == ["seed 0", "seed 1"]  # not submission order
