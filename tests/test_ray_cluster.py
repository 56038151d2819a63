"""A real multi-node Ray cluster on this machine: ``ray start --head`` plus a second node process,
a short training sweep through ``address = "auto"``, then both nodes stopped.

The cluster is isolated from the session's local Ray (``conftest.ray_local``): its own temp dir (so
it never becomes the machine's "latest cluster" that a bare ``ray.init()`` joins), free ports, and
``RAY_ADDRESS`` set only in the sweep's environment, which is how ``"auto"`` finds a cluster on a
node that runs more than one (Ray reads ``RAY_ADDRESS`` first, then the latest ``ray start``).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

BIN = Path(sys.executable).parent
CONFIG = """seed = 0

[space]
formats = ["dense", "s0.5"]
targets = ["s0.5"]
params = [2e4, 3e4]
tokens_per_param = [1, 2]

[budget]
flops = 1e13
hdi_width = 0.01
batch = 2
max_iterations = 1

[backend]
kind = "train"
device = "cpu"

[ray]
address = "auto"
num_gpus_per_run = 0

[fit]
draws = 100
tune = 100
chains = 2
"""

WAIT_FOR_NODES = """
import sys, time, ray
ray.init(address=sys.argv[1], log_to_driver=False)
deadline = time.time() + 90
while sum(n["Alive"] for n in ray.nodes()) < 2:
    if time.time() > deadline:
        sys.exit("the second node did not join within 90 s")
    time.sleep(0.5)
print(sum(n["Alive"] for n in ray.nodes()))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to a `ray start --block` node (it kills its own Ray processes), then the group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):  # the group is already gone: nothing left
        os.killpg(proc.pid, signal.SIGKILL)  # anything the node left in its process group


def test_sweep_on_a_two_node_cluster(tmp_path):
    port = _free_port()
    address = f"127.0.0.1:{port}"
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths live under it
    # Ray >= 2.5x authenticates cluster RPCs with a token; every process of a real cluster gets the
    # same one (here through the environment, never the user's ~/.ray/auth_token)
    env = {**os.environ, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    common = ["--block", "--num-cpus=1", "--num-gpus=0", "--disable-usage-stats"]
    logs = {name: open(tmp_path / f"{name}.log", "w") for name in ("head", "node")}
    head = subprocess.Popen([str(BIN / "ray"), "start", "--head", f"--port={port}", "--include-dashboard=false",
                             f"--temp-dir={temp}", *common],
                            env=env, stdout=logs["head"], stderr=subprocess.STDOUT, start_new_session=True)
    node = None
    try:
        deadline = time.time() + 90
        while not (Path(temp) / "ray_current_cluster").exists():  # written once the head is up
            assert head.poll() is None, (tmp_path / "head.log").read_text()
            assert time.time() < deadline, "the head node did not start within 90 s"
            time.sleep(0.5)
        node = subprocess.Popen([str(BIN / "ray"), "start", f"--address={address}", *common], env=env,
                                stdout=logs["node"], stderr=subprocess.STDOUT, start_new_session=True)
        joined = subprocess.run([sys.executable, "-c", WAIT_FOR_NODES, address], env=env, capture_output=True,
                                text=True, timeout=180)
        assert joined.returncode == 0 and joined.stdout.split()[-1] == "2", joined.stderr[-2000:]

        config = tmp_path / "cluster.toml"
        config.write_text(CONFIG)
        study = tmp_path / "study"
        out = subprocess.run([str(BIN / "bayes-epm"), "sweep", "run", str(study), "--config", str(config), "--json"],
                             env={**env, "RAY_ADDRESS": address}, capture_output=True, text=True, timeout=600)
        assert out.returncode in (0, 1), out.stderr[-3000:]  # 1: the last fit missed a diagnostic (7 tiny runs)
        result = json.loads(out.stdout)
        assert result["diagnostics"]["converged"] == (out.returncode == 0)
        assert result["stopped_because"] == "iterations" and result["failed"] == 0
        assert result["runs"] == 5 + 2  # the initial design (3 dense, 2 s0.5) and one batch of 2

        from bayes_epm.store import Study

        with Study.open(study) as s:
            runs = s.runs()
        assert (runs["status"] == "done").all() and (runs["attempts"] == 1).all()
        nodes = {json.loads(r)["node"] for r in runs["result"]}
        assert len(nodes) == 2, nodes  # one CPU per node, two runs in flight: both nodes trained
    finally:
        for proc in (node, head):
            if proc is not None:
                _stop(proc)
        for f in logs.values():
            f.close()
        shutil.rmtree(temp, ignore_errors=True)
