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
