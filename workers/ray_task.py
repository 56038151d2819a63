"""A thin Ray task around :func:`~bayes_epm.workers.train.run_spec`.

- The task asks Ray for a GPU (``num_gpus=1``) when the spec wants one: ``device="cuda"``, or
  ``device="auto"`` on a cluster that has GPUs. Inside the task the device follows what Ray
  assigned (:func:`_device_in_task`): a task without a GPU trains ``auto`` on its CPU.
- A worker process that dies (segfault, out-of-memory kill, node lost) is retried by Ray up to
  ``max_retries`` times. Python exceptions are not retried: :func:`train` already turns failures
  during training into a ``failed`` result, and bad input would fail the same way again.
- :func:`result_of` turns a task that still failed after its retries into a ``failed``
  :class:`RunResult` carrying the error, so a caller never loses a run to an exception.
- :func:`as_completed` yields results in completion order (``ray.wait``), never submission order.
"""

from __future__ import annotations

import re

from typing import Any, Callable, Iterable, Iterator

import ray
from ray.exceptions import RayError

from bayes_epm.workers.spec import RunResult, TrainSpec
from bayes_epm.workers.train import failed_result, run_spec

DEFAULT_MAX_RETRIES = 2
TrainFn = Callable[[dict[str, Any]], RunResult]


def num_gpus_for(spec: TrainSpec, cluster_gpus: float | None = None) -> float:
    """GPUs to ask Ray for: 1 for ``cuda``; for ``auto``, 1 if the cluster has any GPU."""
    if spec.device.startswith("cuda"):
        return 1
    if spec.device == "cpu":
        return 0
    if cluster_gpus is None:
        if not ray.is_initialized():
            ray.init()  # what the first .remote() call would do anyway
        cluster_gpus = ray.cluster_resources().get("GPU", 0)
    return 1 if cluster_gpus > 0 else 0


def _device_in_task(device: str, gpu_ids: list) -> str:
    """The device a task should use, given the GPUs Ray assigned to it.

    Ray exposes only the assigned GPUs to the task, renumbered from 0, so ``cuda:N`` becomes
    ``cuda``. Ray 2.60 no longer hides GPUs from tasks that reserved none, so ``auto`` without an
    assigned GPU becomes ``cpu`` rather than using a GPU another task reserved.
    """
    if gpu_ids:
        return "cuda" if device.startswith("cuda") else device
    return "cpu" if device == "auto" else device


def _train_task(spec: dict[str, Any], fn: TrainFn | None) -> dict[str, Any]:
    spec = {**spec, "device": _device_in_task(spec["device"], ray.get_gpu_ids())}
    return {**(fn or run_spec)(spec).to_dict(), "node": ray.get_runtime_context().get_node_id()}


_remote_train = ray.remote(_train_task)


def submit(spec: TrainSpec, *, num_gpus: float | None = None, num_cpus: float = 1,
           max_retries: int = DEFAULT_MAX_RETRIES, fn: TrainFn | None = None) -> ray.ObjectRef:
    """Start ``spec`` on the Ray cluster; returns the task's reference.

    ``fn`` replaces :func:`run_spec` inside the task (a backend such as the simulated lab, or a
    fault injected by a test); it receives the spec as a dict and returns a :class:`RunResult`.
    """
    gpus = num_gpus_for(spec) if num_gpus is None else num_gpus
    task = _remote_train.options(num_cpus=num_cpus, num_gpus=gpus, max_retries=max_retries,
                                 retry_exceptions=False)
    return task.remote(spec.to_dict(), fn)


def result_of(ref: ray.ObjectRef, spec: TrainSpec) -> RunResult:
    """The run's result; a task that failed even after its retries becomes a ``failed`` result."""
    try:
        return RunResult.from_dict(ray.get(ref))
    except RayError as exc:
        cause = getattr(exc, "cause", None)  # a RayTaskError carries the task's own exception
        if isinstance(cause, Exception) and not isinstance(cause, RayError):
            return failed_result(spec, f"{type(cause).__name__}: {_one_line(str(cause))}")
        return failed_result(spec, f"{type(exc).__name__}: {_one_line(str(exc))}")


def _one_line(text: str) -> str:
    """The first non-empty line of an error message, without terminal colour codes."""
    lines = [ln for ln in re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines() if ln.strip()]
    return lines[0].strip() if lines else ""


def as_completed(pending: dict[ray.ObjectRef, TrainSpec]) -> Iterator[tuple[ray.ObjectRef, RunResult]]:
    """Yield ``(reference, result)`` for every task in ``pending`` (reference -> spec) as each finishes."""
    refs = list(pending)
    while refs:
        done, refs = ray.wait(refs, num_returns=1)
        for ref in done:
            yield ref, result_of(ref, pending[ref])


def run_many(specs: Iterable[TrainSpec], **submit_kw: Any) -> list[RunResult]:
    """Run every spec on Ray (collected in completion order); results in the order of ``specs``."""
    specs = list(specs)
    index = {submit(spec, **submit_kw): i for i, spec in enumerate(specs)}
    results: dict[int, RunResult] = {}
    for ref, result in as_completed({ref: specs[i] for ref, i in index.items()}):
        results[index[ref]] = result
    return [results[i] for i in range(len(specs))]
