"""Studies, the simulated lab and the active sweep (simulated lab; small fits)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bayes_epm.cli import main
from bayes_epm.config import load_truth
from bayes_epm.errors import InvalidInputError
from bayes_epm.lab import simulate_run, true_epm
from bayes_epm.simulate import Truth, truth_file
from bayes_epm.store import Study

TRUTH = truth_file(Truth(epm={"s0.5": 0.80, "w4a4": 0.75}), cost={"w4a4": 1.2})


def config_text(hdi_width=0.5, flops=1e21, batch=3, extra="", draws=200, chains=2):
    """A simulated study. Small fits by default (these tests are about the loop); the tests that
    need a converged fit to stop on the target ask for the study default, 4 chains x 500."""
    return f"""
seed = 1
[space]
formats = ["dense", "s0.5", "w4a4", "s0.5-w4a4"]
targets = ["s0.5", "w4a4"]
params = [1e7, 1e9]
tokens_per_param = [10, 20, 40]
[budget]
flops = {flops}
hdi_width = {hdi_width}
batch = {batch}
max_iterations = 3
[backend]
kind = "simulate"
truth = "truth.toml"
[fit]
draws = {draws}
tune = {draws}
chains = {chains}
{extra}
"""


@pytest.fixture
def cfg_dir(tmp_path):
    (tmp_path / "truth.toml").write_text(TRUTH)

    def write(**kw):
        path = tmp_path / "study.toml"
        path.write_text(config_text(**kw))
        return path
    return write


# -- config and truth -----------------------------------------------------------------------------
@pytest.mark.parametrize("patch, match", [
    (lambda t: t.replace("seed = 1", "seed = 1\ncolour = 3"), "unknown key"),
    (lambda t: t.replace('"dense", "s0.5"', '"s0.5"'), "must include 'dense'"),
    (lambda t: t.replace('targets = ["s0.5", "w4a4"]', 'targets = ["w8"]'), "targets"),
    (lambda t: t.replace('"w4a4", "s0.5-w4a4"]', '"w4a4", "s0.5-x4"]'), "space.formats"),
    (lambda t: t.replace("params = [1e7, 1e9]", "params = [1e9, 1e7]"), "min must be below max"),
    (lambda t: t.replace("tokens_per_param = [10, 20, 40]", "tokens_per_param = [20]"), "at least 2"),
    (lambda t: t.replace("batch = 3", "batch = 0"), "budget.batch"),
    (lambda t: t.replace("hdi_width = 0.5", "hdi_width = -1"), "budget.hdi_width"),
    (lambda t: t.replace('kind = "simulate"', 'kind = "magic"'), "valid: train, simulate"),
    (lambda t: t.replace('"truth.toml"', '"nowhere.toml"'), "no truth file"),
    (lambda t: t.replace("[fit]", "[fit]\nsteps = 3"), "unknown key"),
    (lambda t: t + "\n[ray]\nnum_gpus_per_run = -1\n", "num_gpus_per_run"),
    (lambda t: t.replace("flops = 1e+21", "flops = 1e10"), "below the initial design"),
])
def test_bad_config_starts_nothing(tmp_path, patch, match, capsys):
    (tmp_path / "truth.toml").write_text(TRUTH)
    cfg = tmp_path / "bad.toml"
    cfg.write_text(patch(config_text()))
    study = tmp_path / "study"
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", "run", str(study), "--config", str(cfg)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1
    assert not study.exists()  # nothing created, so the corrected config can be run at once


def test_truth_file_checks(tmp_path):
    bad = tmp_path / "t.toml"
    bad.write_text(TRUTH.replace("alpha = 0.34", "alpha = -0.34"))
    with pytest.raises(InvalidInputError, match="law.alpha"):
        load_truth(bad)
    bad.write_text(TRUTH.replace("noise_sd = 0.01\n", ""))
    with pytest.raises(InvalidInputError, match="noise_sd"):
        load_truth(bad)


def test_lab_builds_unlisted_formats_from_factors(tmp_path):
    (tmp_path / "t.toml").write_text(TRUTH)
    truth = load_truth(tmp_path / "t.toml")
    assert true_epm(truth, "s0.5-w4a4") == pytest.approx(0.80 * 0.75)
    assert true_epm(truth, "dense") == 1.0
    with pytest.raises(InvalidInputError, match="add 'w8a8'"):
        true_epm(truth, "w8a8")
    spec = {"params": 1e8, "tokens": 2e9, "format": "s0.5"}
    a, b, c = (simulate_run(truth, spec, seed, run_id)["loss"] for seed, run_id in ((0, 1), (0, 1), (0, 2)))
    assert a == b != c  # seeded by (study seed, run id)
    from bayes_epm.law import loss
    assert abs(np.log(a / loss(1e8, 2e9, 0.8, 480.0, 2000.0, 1.8, 0.34, 0.36))) < 0.05


# -- store ----------------------------------------------------------------------------------------
def test_store_lifecycle(cfg_dir, tmp_path):
    study = Study.create(tmp_path / "s", cfg_dir())
    assert (tmp_path / "s" / "truth.toml").is_file()  # the study keeps its own copy of the truth
    ids = study.propose([{"params": 1e7, "tokens": 1e8, "format": f, "seed": i}
                         for i, f in enumerate(["dense", "s0.5", "w4a4"])], iteration=0, scores=[None] * 3,
                        costs=[1.0, 1.0, 1.2])
    for i in ids:
        study.mark_running(i)
    assert study.counts()["running"] == 3
    study.record(ids[0], {"status": "ok", "loss": 3.0, "flops": 6e15})
    study.record(ids[1], {"status": "failed", "loss": float("nan"), "error": "boom", "flops": 6e15})
    assert study.requeue_running() == 1  # the w4a4 run was in flight
    runs = study.runs()
    assert list(runs["status"]) == ["done", "failed", "proposed"] and list(runs["attempts"]) == [1, 1, 1]
    assert runs.loc[1, "error"] == "boom"
    table = study.fit_table()
    assert list(table["format"]) == ["dense"] and table.loc[0, "loss"] == 3.0
    assert study.flops_spent() == pytest.approx(2 * 6e15)
    with pytest.raises(InvalidInputError, match="already holds a study"):
        Study.create(tmp_path / "s", cfg_dir())
    study.close()
    with Study.open(tmp_path / "s") as again:  # everything is on disk
        assert again.counts() == {"proposed": 1, "running": 0, "done": 1, "failed": 1, "diverged": 0}


def test_import_and_export(cfg_dir, tmp_path, capsys):
    Study.create(tmp_path / "s", cfg_dir()).close()
    runs = tmp_path / "r.csv"
    runs.write_text("params,tokens,loss,format\n1e8,2e9,3.1,dense\n1e8,2e9,3.2,s0.5\n")
    assert _cli(["runs", "import", str(tmp_path / "s"), str(runs), "--source", "lab-b"]) == 0
    bad = tmp_path / "bad.csv"
    bad.write_text("params,tokens,loss\n-1,2e9,3.1\n")
    assert _cli(["runs", "import", str(tmp_path / "s"), str(bad)]) == 2
    out = tmp_path / "out.csv"
    assert _cli(["runs", "export", str(tmp_path / "s"), "--out", str(out)]) == 0
    text = out.read_text().splitlines()
    assert text[0] == "params,tokens,loss,format,source" and len(text) == 3 and text[1].endswith("lab-b")
    with Study.open(tmp_path / "s") as st:
        assert st.flops_spent() == 0  # imported runs cost the study nothing


def _cli(argv) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code


# -- the loop -------------------------------------------------------------------------------------
def test_sweep_stops_at_target(cfg_dir, tmp_path, capsys):
    code = _cli(["sweep", "run", str(tmp_path / "s"), "--config", str(cfg_dir(hdi_width=0.9, draws=500, chains=4)),
                 "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["stopped_because"] == "target"
    assert result["runs"] >= 3 + 2 * 3  # the initial design, and more while a fit misses a diagnostic
    assert set(result["epm"]) == {"s0.5", "w4a4"} and all(len(v["hdi_90"]) == 2 for v in result["epm"].values())
    assert all(v["hdi_90"][1] - v["hdi_90"][0] <= 0.9 for v in result["epm"].values())
    assert result["diagnostics"]["converged"] and code == 0  # the target counts only on a converged fit
    # the query commands accept the study directory
    assert _cli(["epm", str(tmp_path / "s"), "--format", "s0.5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["observed"] is True
    assert _cli(["recommend", str(tmp_path / "s"), "--memory-bytes", "1GB", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["budget"]["min_params"] == 1e7  # the study's smallest size
    assert {r["format"] for r in rec["recommendations"]} == {"dense", "s0.5", "w4a4", "s0.5-w4a4"}


def test_sweep_stops_at_budget_and_never_overspends(cfg_dir, tmp_path, capsys):
    from bayes_epm.acquisition import initial_design
    from bayes_epm.config import load_config

    cfg = load_config(cfg_dir())
    design = initial_design(cfg.space)
    initial = sum(6 * d["params"] * d["tokens"] * (1.2 if d["format"] == "w4a4" else 1) for d in design)
    cheapest = 6 * 1e7 * 1e7 * 10
    budget = initial + 2.5 * cheapest  # room for two of the cheapest runs only
    _cli(["sweep", "run", str(tmp_path / "s"), "--config", str(cfg_dir(hdi_width=0.001, flops=budget)), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["stopped_because"] == "budget"
    assert initial < result["flops_spent"] <= budget and result["runs"] == 9 + 2
    with Study.open(tmp_path / "s") as st:
        assert st.last_iteration() >= 1 and st.counts()["proposed"] == 0


def test_sweep_status_and_propose(cfg_dir, tmp_path, capsys):
    study = tmp_path / "s"
    _cli(["sweep", "run", str(study), "--config", str(cfg_dir(hdi_width=0.9)), "--json"])
    ran = json.loads(capsys.readouterr().out)
    assert _cli(["sweep", "status", str(study), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["counts"]["done"] == ran["runs"] >= 9 and set(status["targets"]) == {"s0.5", "w4a4"}
    assert status["diagnostics"] == ran["diagnostics"]
    assert _cli(["sweep", "propose", str(study), "-n", "3", "--json"]) == 0
    proposed = json.loads(capsys.readouterr().out)["runs"]
    assert len(proposed) == 3 and all(r["score"] > 0 for r in proposed)
    assert len({(r["params"], r["tokens"], r["format"]) for r in proposed}) == 3
    with Study.open(study) as st:
        assert st.counts()["proposed"] == 0  # propose stores nothing
    assert _cli(["sweep", "run", str(study), "--config", str(cfg_dir())]) == 2  # exists: no second config
    assert _cli(["sweep", "resume", str(tmp_path / "nothing")]) == 2


def test_acquisition_prefers_informative_cheap_runs(cfg_dir, tmp_path, capsys):
    """After the initial design, a batch holds distinct runs, each affordable, and the greedy
    conditioning lowers the score of what the earlier picks already inform."""
    from bayes_epm.acquisition import candidates, choose_batch
    from bayes_epm.posterior_store import load_fit

    study = tmp_path / "s"
    _cli(["sweep", "run", str(study), "--config", str(cfg_dir(hdi_width=0.9)), "--json"])
    with Study.open(study) as st:
        cfg = st.config
    saved = load_fit(study / "posterior")
    cands = candidates(cfg.space, {"w4a4": 1.2})
    batch = choose_batch(saved.idata, cands, cfg.space.targets, 4, budget_left=1e30)
    assert len(batch) == 4 and batch["score"].is_monotonic_decreasing
    cheap = choose_batch(saved.idata, cands, cfg.space.targets, 4, budget_left=float(cands["flops"].min()) * 1.5)
    assert len(cheap) == 1  # only one run fits in that budget
    # a target-only format (s0.5-w4a4 is not a target) is still a candidate, and dense is one too
    assert {"dense", "s0.5-w4a4"} <= set(cands["format"])


def test_kill_and_resume_loses_and_repeats_nothing(cfg_dir, tmp_path):
    """``kill -9`` the driver after the initial design's runs are stored, then resume."""
    study = tmp_path / "s"
    cfg = cfg_dir(hdi_width=0.001, batch=3)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "bayes_epm.cli", "sweep", "run", str(study), "--config",
                             str(cfg), "--json"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    db = study / "runs.db"
    deadline = time.time() + 240
    while time.time() < deadline:  # wait until some runs are done, then kill mid-sweep
        if db.exists():
            try:
                done = sqlite3.connect(db).execute("SELECT COUNT(*) FROM runs WHERE status='done'").fetchone()[0]
            except sqlite3.OperationalError:
                done = 0
            if done >= 9:
                break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with Study.open(study) as st:
        before = st.runs()
    done_before = before[before["status"] == "done"][["id", "loss"]]
    assert len(done_before) >= 9
    resumed = subprocess.run([sys.executable, "-m", "bayes_epm.cli", "sweep", "resume", str(study), "--json"],
                             capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode in (0, 1), resumed.stderr[-2000:]
    result = json.loads(resumed.stdout)
    with Study.open(study) as st:
        after = st.runs()
    kept = after.set_index("id").loc[done_before["id"]]
    assert (kept["loss"].to_numpy() == done_before["loss"].to_numpy()).all()  # nothing lost or retrained
    assert (kept["attempts"] == 1).all()
    assert (after["status"] == "done").sum() == result["runs"] and result["stopped_because"] == "iterations"
    assert not after["status"].isin(["proposed", "running"]).any()


def _faulty_training():
    """Training stand-in (a closure, so Ray ships it by value): w4a4 raises, s0.5 kills its
    worker, dense diverges below 3e4 parameters and trains for real above."""
    def fn(spec):
        from dataclasses import replace

        from bayes_epm.workers.spec import TrainSpec
        from bayes_epm.workers.train import failed_result, run_spec

        if spec["format"] == "w4a4":
            raise RuntimeError("injected failure")
        if spec["format"] == "s0.5":
            os._exit(1)
        if spec["params"] < 3e4:
            fields = {k: v for k, v in spec.items() if k in TrainSpec.__dataclass_fields__}
            return replace(failed_result(TrainSpec(**fields), "loss became NaN at step 3"), status="diverged",
                           diverged_step=3)
        return run_spec({**spec, "tokens": 2e4, "batch_size": 8, "context": 64, "eval_tokens": 4096})
    return fn


@pytest.mark.ray
def test_ray_dispatch_stores_failures_divergences_and_results(ray_local, tmp_path):
    from bayes_epm.sweep import RayBackend, _collect, _excluded, _start_proposed

    cfg = tmp_path / "train.toml"
    cfg.write_text(config_text().replace('kind = "simulate"\ntruth = "truth.toml"', 'kind = "train"\ndevice = "cpu"'))
    with Study.create(tmp_path / "s", cfg) as study:
        specs = [{"params": p, "tokens": 2e4, "format": f, "seed": i}
                 for i, (p, f) in enumerate([(2e4, "w4a4"), (2e4, "s0.5"), (2e4, "dense"), (4e4, "dense")])]
        study.propose(specs, iteration=0, scores=[None] * 4, costs=[1.0] * 4)
        events = []
        backend = RayBackend("", 0, "cpu", fn=_faulty_training())
        on_event = lambda kind, p: events.append((kind, p))  # noqa: E731
        _start_proposed(study, backend, on_event)
        while backend.in_flight():
            _collect(study, backend, on_event)
        runs = study.runs().set_index("format", append=True)
        status = dict(zip(study.runs()["id"], study.runs()["status"]))
        assert list(status.values()) == ["failed", "failed", "diverged", "done"]
        errors = study.runs()["error"].tolist()
        assert errors[0] == "RuntimeError: injected failure" and "Worker" in errors[1] and "NaN" in errors[2]
        assert list(study.fit_table()["format"]) == ["dense"]  # failed and diverged runs are not evidence
        assert len(_excluded(study)) == 3  # and are never proposed again
        assert sum(kind == "finished" for kind, _ in events) == 4
        assert runs["attempts"].tolist() == [1, 1, 1, 1]


class _OneAtATimeLab:
    """The simulated lab, but runs land one at a time, oldest first: a cluster where runs finish
    while others are still training."""

    def __init__(self, truth, seed):
        from bayes_epm.sweep import SimulatedBackend

        self.inner, self.waiting = SimulatedBackend(truth, seed), []

    def start(self, run_id, spec):
        self.inner.start(run_id, spec)
        self.waiting += self.inner.wait()

    def wait(self):
        return [self.waiting.pop(0)] if self.waiting else []

    def in_flight(self):
        return len(self.waiting)

    def close(self):
        """Nothing to release: no processes."""


def test_free_slots_are_refilled_while_runs_are_in_flight(cfg_dir, tmp_path, monkeypatch):
    """With batch = 3, each finished run frees one slot: the sweep refits and proposes one run,
    with the two still training as pending, instead of waiting for the whole batch."""
    from bayes_epm import sweep

    monkeypatch.setattr(sweep, "make_backend", lambda cfg, truth: _OneAtATimeLab(truth, cfg.seed))
    events = []
    with Study.create(tmp_path / "s", cfg_dir(hdi_width=0.001)) as study:
        outcome = sweep.run_sweep(study, lambda kind, p: events.append((kind, p)))
        runs = study.runs()
    assert outcome.stopped_because == "iterations"
    proposals = [p for kind, p in events if kind == "proposed"]
    assert [len(p["batch"]) for p in proposals] == [3, 1, 1]  # after the first batch: one free slot at a time
    assert [p["in_flight"] for p in proposals] == [0, 2, 2]
    fits = [kind for kind, _ in events if kind == "fitted"]
    assert len(fits) == 1 + 3 + 1  # the design; 3 refits with a free slot; once the last 2 in flight land
    order = [(kind, p["id"]) for kind, p in events if kind in ("started", "finished")]
    first_of_batch_2 = int(runs.loc[runs["iteration"] == 2, "id"].min())
    last_of_batch_1 = int(runs.loc[runs["iteration"] == 1, "id"].max())
    assert order.index(("started", first_of_batch_2)) < order.index(("finished", last_of_batch_1))
    assert (runs["status"] == "done").all() and len(runs) == 9 + 3 + 1 + 1  # nothing left in flight


@pytest.mark.parametrize("params, second", [((1e7, 1e9), 2), ((2e4, 3e5), 4), ((2e4, 1e5), 4)])
def test_initial_design_identifies_the_law_cheaply(params, second):
    """Two token ratios for dense, two sizes for every format; the second size is the grid size
    nearest 4x the smallest, never past the middle."""
    from bayes_epm.acquisition import initial_design, size_grid
    from bayes_epm.config import Space

    space = Space(formats=["dense", "s0.5", "w4a4"], targets=["s0.5", "w4a4"], params=params,
                  tokens_per_param=[10, 20, 40])
    design = initial_design(space)
    sizes = size_grid(space)
    assert sorted({d["params"] for d in design}) == [sizes[0], sizes[second]]
    dense = [d for d in design if d["format"] == "dense"]
    assert {d["tokens"] / d["params"] for d in dense} == {10, 20, 40}
    for f in ("s0.5", "w4a4"):
        assert sorted(d["params"] for d in design if d["format"] == f) == [sizes[0], sizes[second]]


def test_a_fit_that_missed_a_diagnostic_never_stops_the_sweep_on_target(cfg_dir, tmp_path, monkeypatch):
    """Narrow intervals from an unconverged fit are not evidence: the sweep goes on proposing."""
    from dataclasses import replace

    from bayes_epm import sweep

    real, calls = sweep.fit_study, []

    def first_fit_unconverged(study):
        idata, diag = real(study)
        calls.append(diag)
        if len(calls) == 1:
            diag = replace(diag, r_hat_max=1.5, converged=False)
        return idata, diag

    monkeypatch.setattr(sweep, "fit_study", first_fit_unconverged)
    events = []
    with Study.create(tmp_path / "s", cfg_dir(hdi_width=5.0, draws=500, chains=4)) as study:  # all narrower than 5
        outcome = sweep.run_sweep(study, lambda kind, p: events.append((kind, p)))
    fits = [p["diagnostics"] for kind, p in events if kind == "fitted"]
    assert not fits[0].converged and any(kind == "proposed" for kind, _ in events)
    assert outcome.stopped_because == "target" and fits[-1].converged
    assert outcome.diagnostics["converged"] is True
    assert outcome.runs == 9 + 3  # the initial design, then one batch of 3 before the converged fit stopped it
