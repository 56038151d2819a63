"""Every example and benchmark runs, with tiny arguments, as a user would start it."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_tiny_grid():
    out = run("examples/tiny_grid.py", "--sizes", "2e4", "6e4", "--formats", "dense", "w4",
              "--tokens-per-param", "1")
    assert "| N (non-embedding) |" in out and "loss falls with size" in out
    assert out.count("\n| ") >= 3  # header and one row per size


@pytest.mark.ray
def test_tiny_grid_on_ray():
    out = run("examples/tiny_grid.py", "--sizes", "2e4", "--formats", "dense", "--tokens-per-param", "1", "--ray")
    assert "| N (non-embedding) |" in out


def test_lr_check():
    out = run("examples/lr_check.py", "--sizes", "2e4", "--tokens-per-param", "1", "--multipliers", "1", "2")
    assert "rule lr" in out and len(out.strip().splitlines()) == 2


def test_compression_overhead_benchmark():
    out = run("benchmarks/compression_overhead.py", "--params", "2e4", "--rounds", "1", "--steps", "1",
              "--formats", "dense", "s0.5", "w4a4")
    assert "x dense" in out and "w4a4" in out


def test_gpu_throughput_benchmark_runs_on_cpu():
    out = run("benchmarks/gpu_throughput.py", "--params", "2e4", "--tokens", "2e3", "--device", "cpu",
              "--batch-size", "4", "--context", "32", "--peak-tflops", "0.1", "--formats", "dense", "w4")
    assert "MFU %" in out and "w4" in out


def test_published_fits_example():
    out = run("examples/published_fits.py", "--tables", "sparse_t5", "--draws", "60", "--tune", "60", "--chains", "2")
    assert "| EPM s0.5 |" in out and "| alpha |" in out and "diagnostics: max r-hat" in out
    assert "0.793" in out  # the authors' s0.5 EPM, converted to dense parameters


def test_quest_frontier_example(tmp_path):
    out = run("examples/quest_frontier.py", "--draws", "100", "--tune", "100", "--chains", "2", "--out", str(tmp_path))
    assert "| w4a4:hadamard_trust | weights+activations | 4.02 |" in out and "| 5.78 |" in out
    assert "w8a8:half_hadamard_trust -> w4a4:half_hadamard_trust: P(pays)" in out
    assert "the authors' optimum: 4 bits" in out and "who wins where" in out
    assert (tmp_path / "frontier.png").stat().st_size > 20_000 and (tmp_path / "posterior.nc").is_file()


def test_service_load_benchmark():
    out = run("benchmarks/service_load.py", "--clients", "2", "--queries", "24", "--draws", "100", "--refits", "1")
    assert "| quiet study |" in out and "| sweep writing |" in out and "errors: 0" in out


def test_fit_speed_benchmark():
    out = run("benchmarks/fit_speed.py", "--resamples", "4", "--grid-step", "4", "--draws", "60", "--tune", "60",
              "--chains", "2", "--workers", "1")
    assert "32 L-BFGS starts + 4 bootstrap refits" in out and "speed-up:" in out and "| alpha |" in out


def test_fit_scaling_benchmark():
    out = run("benchmarks/fit_scaling.py", "--runs", "40", "80", "--formats", "2", "--draws", "60", "--tune", "60",
              "--chains", "2")
    assert out.count("\n| 40 | 2 |") + out.count("\n| 80 | 2 |") == 2 and "grows as runs^" in out


def test_classic_fit_recovers_a_known_law():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import numpy as np
    from fit_speed import _fit_one, huber_objective
    from scipy.optimize import check_grad

    rng = np.random.default_rng(0)
    log_n, log_d = rng.uniform(17, 22, 200), rng.uniform(20, 25, 200)
    truth = np.array([np.log(480.0), np.log(2000.0), np.log(1.8), 0.34, 0.36])
    a, b, e, al, be = truth
    log_l = np.logaddexp(np.logaddexp(a - al * log_n, b - be * log_d), e)
    x = truth + 0.1
    assert check_grad(lambda x: huber_objective(x, log_n, log_d, log_l)[0],
                      lambda x: huber_objective(x, log_n, log_d, log_l)[1], x) < 1e-5
    _, fitted = _fit_one((truth + np.array([0.5, -0.5, 0.1, 0.05, -0.05]), log_n, log_d, log_l, True))
    assert np.allclose(fitted[3:], truth[3:], atol=2e-3) and abs(np.exp(fitted[2]) - 1.8) < 0.01


def test_refit_cost_benchmark():
    out = run("benchmarks/refit_cost.py", "--runs", "30", "--draws", "30", "--tune", "30", "--chains", "2")
    row = [ln for ln in out.splitlines() if ln.startswith("| 30 |")]
    assert len(row) == 1
    cells = [c.strip() for c in row[0].split("|")[1:-1]]
    assert len(cells) == 7
    first, refit, cold = (float(c) for c in cells[1:4])
    assert refit < cold and refit < first  # the refit did not compile


def test_design_efficiency_benchmark():
    out = run("benchmarks/design_efficiency.py", "--seeds", "1", "--draws", "60", "--tune", "60",
              "--max-iterations", "1")
    rows = {ln.split("|")[1].strip(): ln for ln in out.splitlines() if ln.startswith("| ")}
    assert {"active", "random", "grid", "oracle floor"} <= set(rows)
    assert "| 100.00% |" in rows["grid"]  # the grid is its own yardstick
    for line in ("active / grid FLOPs:", "active / oracle floor:", "active coverage:"):
        assert line in out


def test_oracle_floor_shrinks_with_a_wider_target():
    """The Fisher oracle: a wider target width needs fewer FLOPs, and a noisier lab more."""
    import argparse
    import importlib.util

    spec = importlib.util.spec_from_file_location("design_efficiency", ROOT / "benchmarks/design_efficiency.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    base = dict(seeds=1, batch=4, draws=10, tune=10, max_iterations=1, out=None)
    tight, _ = mod.oracle_flops(argparse.Namespace(width=0.05, noise=0.01, **base))
    wide, _ = mod.oracle_flops(argparse.Namespace(width=0.2, noise=0.01, **base))
    noisy, _ = mod.oracle_flops(argparse.Namespace(width=0.05, noise=0.03, **base))
    assert 0 < wide < tight < noisy


def test_new_method_example():
    out = run("examples/new_method.py", "--draws", "100", "--tune", "100", "--max-iterations", "1")
    assert "w4:mxq: 5/50/95% 0.737 / 0.866 / 0.948  (beta(alpha=24, beta=4))" in out  # the file's beta prior
    assert "GMSE 0.4327 on the capacity curve" in out  # the callable measured, placed on the curve
    assert "| w4:mxq | 0.880 |" in out and "| w4a4:mxq | - | - |" in out and "| hierarchy |" in out


def test_prior_gain_benchmark():
    # two arms: the yardstick and the one that needs a previous study (the others differ by a prior line)
    out = run("benchmarks/design_efficiency.py", "--prior-gain", "--arms", "vague", "previous posterior", "--seeds", "1",
              "--draws", "60", "--tune", "60", "--max-iterations", "1")
    assert "| w4:mxq prior | median runs |" in out
    assert all(f"| {arm} |" in out for arm in ("vague", "previous posterior")) and "| GMSE |" not in out
