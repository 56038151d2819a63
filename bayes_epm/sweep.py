"""The active sweep: propose -> train -> store -> refit, until the budget is spent or the targets are pinned.

Runs are kept in flight continuously: the initial design is dispatched (Ray for real training,
in-process for the simulated lab) and fitted once it has all landed; from then on, whenever a run
finishes and a slot of ``budget.batch`` is free, its result is stored, the model is refit on every
finished run (the fit is saved in the study) and :mod:`bayes_epm.acquisition` fills the free slots,
treating the runs still in flight as pending observations. With the simulated lab, which answers
at once, this is batch by batch. The loop stops when every target's 90% HDI is narrower than
``budget.hdi_width`` on a converged fit (``"target"``; a fit that missed r-hat, ESS or divergence
checks can show intervals far too narrow -- 9 runs, r-hat 1.56, the noise scale stuck near 0 --
so it never stops the sweep), when no affordable run is left in the budget (``"budget"``),
or after ``budget.max_iterations`` proposal rounds (``"iterations"``); runs still in flight then
land and are fitted before it returns.

Because every state change is a store transaction, a driver killed at any point resumes where it
was: finished runs are never trained again, runs that were in flight are run again, and a batch
that was proposed but not started is started.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from bayes_epm.acquisition import (TargetState, candidates, choose_batch, initial_design, point_key, study_centre,
                                   target_states)
from bayes_epm.config import LabTruth, StudyConfig, load_truth
from bayes_epm.errors import InvalidInputError, RunFailure
from bayes_epm.lab import cost_factor, simulate_run, true_epm
from bayes_epm.store import Study

Event = Callable[[str, dict], None]
STOP_REASONS = ("target", "budget", "iterations")
LONGER_IF_R_HAT_BELOW = 1.05  # a fit short only of ESS (no divergence, r-hat this close) is rerun with 2x draws


@dataclass
class SweepOutcome:
    runs: int
    failed: int
    diverged: int
    flops_spent: float
    stopped_because: str
    targets: list[TargetState] = field(default_factory=list)
    diagnostics: dict = field(default_factory=dict)
    posterior: str = ""

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "targets"}
        return d | {"epm": {s.format: s.to_dict() for s in self.targets}}


# -- backends -------------------------------------------------------------------------------------
class SimulatedBackend:
    """Answers each run from the truth file, in-process."""

    def __init__(self, truth: LabTruth, seed: int) -> None:
        self.truth, self.seed, self._queue = truth, seed, []

    def start(self, run_id: int, spec: dict) -> None:
        self._queue.append((run_id, simulate_run(self.truth, spec, self.seed, run_id)))

    def wait(self) -> list[tuple[int, dict]]:
        """Every run started and not yet collected (the lab answers at once)."""
        done, self._queue = self._queue, []
        return done

    def in_flight(self) -> int:
        return len(self._queue)

    def close(self) -> None:
        """Nothing to release: the lab holds no processes."""


class RayBackend:
    """Trains each run as a Ray task (:mod:`bayes_epm.workers.ray_task`); local Ray when no address.

    ``fn`` replaces the training function inside the task (see :func:`~bayes_epm.workers.ray_task.submit`).
    """

    def __init__(self, address: str, num_gpus: float, device: str, fn=None) -> None:
        import ray

        self._started = not ray.is_initialized()
        if self._started:
            # empty address: RAY_ADDRESS when set (a driver started by `ray job submit`), else a new
            # local Ray even where a `ray start` cluster runs on this machine (which ray.init() joins)
            address = address or (None if os.environ.get("RAY_ADDRESS") else "local")
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        self.num_gpus, self.device, self.fn, self._pending = num_gpus, device, fn, {}

    def start(self, run_id: int, spec: dict) -> None:
        from bayes_epm.workers.ray_task import submit
        from bayes_epm.workers.spec import TrainSpec

        from bayes_epm.models.formats import Format
        from bayes_epm.models.quantize import callable_origin
        from bayes_epm.models.sparsity import METHOD_SPARSIFIERS

        fmt = Format.parse(spec["format"])  # a prior file's methods travel as their import paths
        train_spec = TrainSpec(params=spec["params"], tokens=spec["tokens"], format=spec["format"],
                               seed=int(spec.get("seed", 0)), device=self.device,
                               quantizer_callable=callable_origin(fmt.quantizer) if fmt.is_quantized else "",
                               sparsifier_callable=METHOD_SPARSIFIERS.get(fmt.sparsifier, ""))
        self._pending[submit(train_spec, num_gpus=self.num_gpus, fn=self.fn)] = (run_id, train_spec)

    def wait(self) -> list[tuple[int, dict]]:
        """Block until at least one run in flight finishes; return it and any others already done,
        in completion order (empty when nothing is in flight)."""
        import ray

        from bayes_epm.workers.ray_task import result_of

        if not self._pending:
            return []
        refs = list(self._pending)
        done, rest = ray.wait(refs, num_returns=1)
        if rest:
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            done += more
        out = []
        for ref in done:
            run_id, spec = self._pending.pop(ref)
            out.append((run_id, result_of(ref, spec).to_dict()))
        return out

    def in_flight(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        import ray

        if self._started and ray.is_initialized():
            ray.shutdown()


def _truth(cfg: StudyConfig) -> LabTruth | None:
    """The simulated lab's truth, or None for real training."""
    return load_truth(Path(cfg.base_dir) / cfg.backend.truth) if cfg.backend.kind == "simulate" else None


def make_backend(cfg: StudyConfig, truth: LabTruth | None):
    if truth is not None:
        return SimulatedBackend(truth, cfg.seed)
    return RayBackend(cfg.ray.address, cfg.ray.num_gpus_per_run, cfg.backend.device)


# -- the loop -------------------------------------------------------------------------------------
def _specs(design: list[dict], first_seed: int) -> list[dict]:
    return [{"params": float(d["params"]), "tokens": float(d["tokens"]), "format": d["format"],
             "seed": first_seed + i} for i, d in enumerate(design)]


def _initial_specs(cfg: StudyConfig, truth: LabTruth | None) -> tuple[list[dict], list[float]]:
    design = _specs(initial_design(cfg.space), 0)
    return design, [cost_factor(truth, d["format"]) for d in design]


def preflight(cfg: StudyConfig) -> LabTruth | None:
    """Everything about a config that can be checked before a study is created or continued: the
    truth file answers every format of the space, and the budget covers the initial design.
    Returns the truth (None for real training)."""
    truth = _truth(cfg)
    if truth is not None:
        for f in cfg.space.formats:
            true_epm(truth, f)
    else:  # real training: every quantizer and sparsifier of the space must be trainable here
        from bayes_epm.models.formats import Format
        from bayes_epm.models.quantize import QUANTIZERS, callable_origin
        from bayes_epm.models.sparsity import DEFAULT_SPARSIFIER, METHOD_SPARSIFIERS, SPARSIFIERS

        fmts = [Format.parse(f) for f in cfg.space.formats]
        why = [f"quantizer {q}: " + (f"its callable {callable_origin(q)!r} does not import here" if callable_origin(q)
                                     else "not trainable (published runs only, or a prior without a callable)")
               for q in sorted({f.quantizer for f in fmts if f.is_quantized and f.quantizer not in QUANTIZERS})]
        why += [f"sparsifier {sp}: " + (f"its callable {METHOD_SPARSIFIERS[sp]!r} does not import here"
                                        if METHOD_SPARSIFIERS.get(sp) else "a prior without a callable")
                for sp in sorted({f.sparsifier for f in fmts if f.is_sparse} - {DEFAULT_SPARSIFIER, *SPARSIFIERS})]
        if why:
            raise InvalidInputError(f"backend.kind = 'train' cannot train every format of space.formats "
                                    f"({'; '.join(why)}); trainable quantizers: {', '.join(sorted(QUANTIZERS))}")
    design, costs = _initial_specs(cfg, truth)
    flops = sum(6 * d["params"] * d["tokens"] * c for d, c in zip(design, costs))
    if flops > cfg.budget.flops:
        raise InvalidInputError(f"budget.flops = {cfg.budget.flops:.3g} is below the initial design's "
                                f"{flops:.3g} FLOPs ({len(design)} runs); raise the budget or lower space.params")
    return truth


def _start_proposed(study: Study, backend, on_event: Event) -> None:
    for run_id in study.runs("proposed")["id"]:
        study.mark_running(int(run_id))
        backend.start(int(run_id), study.spec(int(run_id)))
        on_event("started", {"id": int(run_id), **study.spec(int(run_id))})


def _collect(study: Study, backend, on_event: Event) -> int:
    """Store the runs that finished (waiting for at least one if any is in flight); how many."""
    finished = backend.wait()
    for run_id, result in finished:
        status = study.record(run_id, result)
        on_event("finished", {"id": run_id, "status": status, "loss": result.get("loss"),
                              "error": result.get("error", ""), **study.spec(run_id),
                              "counts": study.counts(), "flops_spent": study.flops_spent()})
    return len(finished)


def _excluded(study: Study) -> set[tuple]:
    bad = pd.concat([study.runs("failed"), study.runs("diverged")])
    return {point_key(r) for r in bad.to_dict("records")}


def fit_study(study: Study):
    """Fit the model on the study's finished runs and save the posterior in the study."""
    from bayes_epm.inference import fit
    from bayes_epm.posterior_store import save_fit

    cfg = study.config
    table = study.fit_table()
    if "dense" not in set(table["format"]):
        raise RunFailure("the study has no finished dense run to fit the law on (every dense run failed or "
                         "diverged: see `bayes-epm sweep status`)")
    settings = {"draws": cfg.fit.draws, "tune": cfg.fit.tune, "chains": cfg.fit.chains, "seed": cfg.seed}
    priors = study.priors
    idata, diag = fit(table, centre=study_centre(cfg.space), priors=priors, **settings)
    if not diag.converged and not diag.divergences and diag.r_hat_max <= LONGER_IF_R_HAT_BELOW:
        # the chains agree but are too short for ESS >= 400 (few runs: funnel-shaped nuisance
        # directions): run them once more with twice the draws, as one would by hand
        settings = {**settings, "draws": 2 * cfg.fit.draws, "seed": cfg.seed + 1}  # new draws, not a repeat
        idata, diag = fit(table, centre=study_centre(cfg.space), priors=priors, **settings)
    save_fit(study.posterior_dir, idata, table, diag, priors, settings, versioned=True)
    return idata, diag


def _target_met(diag, states: list[TargetState], hdi_width: float) -> bool:
    return diag.converged and all(s.hdi_width <= hdi_width for s in states)


def _refit(study: Study, iteration: int, on_event: Event):
    """Fit the study, report it; returns (idata, diagnostics, target states, FLOPs spent)."""
    t0 = time.perf_counter()
    idata, diag = fit_study(study)
    states, spent = target_states(idata, study.config.space.targets, priors=study.priors), study.flops_spent()
    on_event("fitted", {"iteration": iteration, "targets": states, "diagnostics": diag,
                        "fit_s": time.perf_counter() - t0, "flops_spent": spent, "counts": study.counts()})
    return idata, diag, states, spent


def run_sweep(study: Study, on_event: Event | None = None, choose=choose_batch) -> SweepOutcome:
    """Create-or-continue the sweep of ``study`` until it stops; returns the outcome.

    ``choose`` picks each batch (signature of :func:`bayes_epm.acquisition.choose_batch`); the
    design-efficiency benchmark swaps in a random choice to compare against."""
    on_event = on_event or (lambda kind, payload: None)
    cfg = study.config
    truth = preflight(cfg)
    requeued = study.requeue_running()
    if requeued:
        on_event("requeued", {"runs": requeued})
    if not (study.runs()["iteration"] >= 0).any():  # no run of its own yet (imported runs do not count)
        design, costs = _initial_specs(cfg, truth)
        study.propose(design, iteration=0, scores=[None] * len(design), costs=costs)
    backend = make_backend(cfg, truth)
    try:
        iteration = max(study.last_iteration(), 0)
        _start_proposed(study, backend, on_event)
        fitted = None  # a fit already made on everything landed, to decide from
        while True:
            if fitted is None:
                _collect(study, backend, on_event)  # waits for at least one run when any is in flight
            in_flight = study.runs("running")
            if len(in_flight) and not backend.in_flight():
                raise RunFailure(f"{len(in_flight)} run(s) of the study are marked running but this driver "
                                 "started none of them: is another driver working on this study? Stop it, "
                                 "then `bayes-epm sweep resume` runs them again")
            if (in_flight["iteration"] == 0).any() or len(in_flight) >= cfg.budget.batch:
                continue  # the initial design completes before the first fit; no free slot yet
            idata, diag, states, spent = fitted or _refit(study, iteration, on_event)
            fitted = None
            reason = None
            if _target_met(diag, states, cfg.budget.hdi_width):
                reason = "target"  # never on a fit that missed a diagnostic: its intervals mean nothing
            elif iteration >= cfg.budget.max_iterations:
                reason = "iterations"
            else:
                cost = {f: cost_factor(truth, f) for f in cfg.space.formats}
                committed = float((6 * in_flight["params"] * in_flight["tokens"] * in_flight["cost"]).sum())
                cands = candidates(cfg.space, cost, exclude=_excluded(study))
                batch = choose(idata, cands, cfg.space.targets, cfg.budget.batch - len(in_flight),
                               pending=in_flight[["params", "tokens", "format"]], hdi_width=cfg.budget.hdi_width,
                               budget_left=cfg.budget.flops - spent - committed, seed=cfg.seed + iteration,
                               priors=study.priors)
                if batch.empty:
                    reason = "budget"
                else:
                    iteration += 1
                    n_runs = len(study.runs())
                    specs = _specs(batch.to_dict("records"), n_runs)
                    study.propose(specs, iteration=iteration, scores=batch["score"].tolist(),
                                  costs=[cost[s["format"]] for s in specs])
                    on_event("proposed", {"iteration": iteration, "batch": batch, "in_flight": len(in_flight)})
                    _start_proposed(study, backend, on_event)
            if reason and len(in_flight):  # results are never dropped: the runs in flight land, one last fit
                while backend.in_flight():
                    _collect(study, backend, on_event)
                idata, diag, states, spent = _refit(study, iteration, on_event)
                if reason == "target" and not _target_met(diag, states, cfg.budget.hdi_width):
                    fitted = (idata, diag, states, spent)  # the landed runs changed the answer: go on
                    continue
            if reason:
                counts = study.counts()
                return SweepOutcome(runs=counts["done"], failed=counts["failed"], diverged=counts["diverged"],
                                    flops_spent=spent, stopped_because=reason, targets=states,
                                    diagnostics=diag.to_dict(), posterior=str(study.posterior_dir))
    finally:
        backend.close()


def propose_only(study: Study, n: int) -> pd.DataFrame:
    """The next ``n`` runs and their scores from the saved posterior, without running or storing them."""
    from bayes_epm.posterior_store import load_fit

    cfg = study.config
    truth = _truth(cfg)
    if study.fit_table().empty:
        design = pd.DataFrame(initial_design(cfg.space))
        return design.assign(flops=6 * design["params"] * design["tokens"], score=float("nan")).head(n)
    saved = load_fit(study.posterior_dir)
    cost = {f: cost_factor(truth, f) for f in cfg.space.formats}
    pending = pd.concat([study.runs("proposed"), study.runs("running")])[["params", "tokens", "format"]]
    return choose_batch(saved.idata, candidates(cfg.space, cost, exclude=_excluded(study)), cfg.space.targets, n,
                        pending=pending, hdi_width=cfg.budget.hdi_width,
                        budget_left=cfg.budget.flops - study.flops_spent(), seed=cfg.seed, priors=study.priors)


def status(study: Study, cached: bool = False) -> dict[str, Any]:
    """Runs by status, FLOPs spent against the budget, each target's EPM and the last fit's diagnostics
    (``cached``: reuse a fit this process has read, while unchanged)."""
    cfg = study.config
    out: dict[str, Any] = {"study": str(study.path), "counts": study.counts(), "flops_spent": study.flops_spent(),
                           "flops_budget": cfg.budget.flops, "targets": {}}
    if (study.posterior_dir / "posterior.nc").is_file():
        from bayes_epm.posterior_store import load_fit

        saved = load_fit(study.posterior_dir, cached=cached)
        out["targets"] = {s.format: s.to_dict() for s in target_states(saved.idata, cfg.space.targets,
                                                                        priors=study.priors)}
        out["diagnostics"] = saved.meta["diagnostics"]
    return out
