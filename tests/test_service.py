"""The HTTP service (FastAPI's test client), reports, and the dashboard in a real headless Chromium."""

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from bayes_epm.cli import main
from bayes_epm.errors import InvalidInputError
from bayes_epm.service import check_token, create_app
from bayes_epm.simulate import Truth, truth_file

TOKEN = "s3cret-token-of-32-characters-xx"
CONFIG = """
seed = 1
[space]
formats = ["dense", "s0.5", "w4a4"]
targets = ["s0.5", "w4a4"]
params = [1e7, 1e9]
tokens_per_param = [10, 40]
[budget]
flops = 1e21
hdi_width = 0.3
[backend]
kind = "simulate"
truth = "truth.toml"
[fit]
draws = 400
tune = 400
chains = 2
"""
TRUTH = truth_file(Truth(epm={"s0.5": 0.80, "w4a4": 0.75}))


def _new_study(root: Path, name: str, fit: bool = True) -> Path:
    from bayes_epm.simulate import simulate_runs
    from bayes_epm.store import Study
    from bayes_epm.sweep import fit_study

    (root / "cfg").mkdir(exist_ok=True)
    (root / "cfg" / "truth.toml").write_text(TRUTH)
    (root / "cfg" / "study.toml").write_text(CONFIG)
    path = root / "studies" / name
    with Study.create(path, root / "cfg" / "study.toml") as st:
        truth = Truth(epm={"dense": 1.0, "s0.5": 0.8, "w4a4": 0.75})
        runs = simulate_runs(truth, list(np.geomspace(1e7, 1e9, 3)), [10, 40], list(truth.epm), np.random.default_rng(2))
        st.import_runs(runs, "simulated")
        if fit:
            fit_study(st)
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A studies directory with one fitted study ``s`` and one without a fit, ``empty``."""
    root = tmp_path_factory.mktemp("service")
    _new_study(root, "s")
    _new_study(root, "empty", fit=False)
    return root / "studies"


@pytest.fixture(scope="module")
def client(served):
    return TestClient(create_app(served))


def test_every_query_endpoint_answers_as_the_cli(client, served, cli_json):
    s = str(served / "s")
    assert client.get("/health").json()["status"] == "ok"
    paths = set(client.get("/openapi.json").json()["paths"])
    assert {"/studies/{study_id}/epm", "/studies/{study_id}/recommend", "/studies/{study_id}/frontier",
            "/studies/{study_id}/proposals", "/studies/{study_id}/priors", "/studies/{study_id}/report"} <= paths
    listed = client.get("/studies").json()["studies"]
    assert [(x["id"], x["fitted"]) for x in listed] == [("empty", False), ("s", True)]
    info = client.get("/studies/s").json()
    assert info["id"] == "s" and info["counts"]["done"] == 18 and info["config"]["space"]["targets"] == ["s0.5", "w4a4"]
    assert info["flops_spent"] == 0.0 and info["fraction_spent"] == 0.0  # imported runs cost the study nothing
    assert set(info["targets"]) == {"s0.5", "w4a4"} and "r_hat_max" in info["diagnostics"]
    runs = client.get("/studies/s/runs", params={"status": "done"}).json()["runs"]
    assert len(runs) == 18 and {"id", "params", "tokens", "format", "loss"} <= set(runs[0])
    pairs = [
        ("/studies/s/epm", {"format": "w8a8", "hdi": 0.8}, ["epm", s, "--format", "w8a8", "--hdi", "0.8"]),
        ("/studies/s/compare", {"a": "s0.5", "b": "w4a4"}, ["compare", s, "s0.5", "w4a4"]),
        ("/studies/s/predict", {"params": 1e8, "tokens": 2e9, "format": "s0.5"},
         ["predict", s, "--params", "1e8", "--tokens", "2e9", "--format", "s0.5"]),
        ("/studies/s/recommend", {"memory_bytes": "1GB", "train_flops": 1e20, "formats": "dense,w4a4,w3"},
         ["recommend", s, "--memory-bytes", "1GB", "--train-flops", "1e20", "--formats", "dense,w4a4,w3"]),
        ("/studies/s/frontier", {"points": 4, "tokens": 1e10, "min_bytes": "1MB", "max_bytes": "1GB"},
         ["frontier", s, "--points", "4", "--tokens", "1e10", "--min-bytes", "1MB", "--max-bytes", "1GB"]),
    ]
    for url, params, argv in pairs:
        got = client.get(url, params=params)
        assert got.status_code == 200, got.text
        assert got.json() == cli_json(argv), url


@pytest.mark.parametrize("url,code,match", [
    ("/studies/nope/epm?format=w4", 404, "no study 'nope'"),
    ("/studies/.hidden/epm?format=w4", 422, "study id '.hidden' is not valid"),
    ("/studies/%2e%2e/epm?format=w4", 422, "study id '..' is not valid"),
    ("/studies/..%2F..%2Fetc/runs", 404, "Not Found"),
    ("/studies/empty/epm?format=w4", 409, "has no fit yet"),
    ("/studies/s/epm?format=w9", 422, "w_bits=9 is not valid"),
    ("/studies/s/epm", 422, "format"),
    ("/studies/s/epm?format=w4&hdi=2", 422, "hdi=2.0 is not valid"),
    ("/studies/s/compare?a=s0.5", 422, "b"),
    ("/studies/s/predict?params=-1&tokens=1e9", 422, "params=-1.0 is not valid"),
    ("/studies/s/predict?params=abc&tokens=1e9", 422, "valid number"),
    ("/studies/s/runs?status=lost", 422, "status 'lost' is not valid"),
    ("/studies/s/recommend?memory_bytes=0", 422, "memory_bytes='0' is not valid"),
    ("/studies/s/recommend?memory_bytes=1kB", 422, "too small for every candidate"),
    ("/studies/s/recommend?memory_bytes=1GB&tokens=1e9&train_flops=1e20", 422, "at most one of"),
    ("/studies/s/frontier?points=1", 422, "points=1 is not valid"),
    ("/studies/s/plots/nope.png", 404, "no plot 'nope'"),
    ("/studies/empty/plots/loss.png", 409, "no fit yet"),
])
def test_errors(client, url, code, match):
    r = client.get(url)
    assert r.status_code == code, r.text
    assert match in json.dumps(r.json())


def test_proposals_store_nothing(client, served):
    from bayes_epm.store import Study

    r = client.post("/studies/s/proposals", params={"n": 2})
    assert r.status_code == 200, r.text
    runs = r.json()["runs"]
    assert len(runs) == 2 and all(x["score"] > 0 and x["format"] in ("dense", "s0.5", "w4a4") for x in runs)
    with Study.open(served / "s") as st:
        assert st.counts()["proposed"] == 0
    assert client.post("/studies/s/proposals", params={"n": 0}).status_code == 422
    assert client.post("/studies/s/proposals", params={"n": 65}).status_code == 422


def _hashes(path: Path) -> dict:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file() and not p.name.startswith("runs.db")}


@pytest.fixture()
def forget_webq():
    """The method the HTTP test imports is registered process-wide: unregister it afterwards."""
    yield
    from bayes_epm.models import quantize

    quantize.unregister_method_quantizer("webq")


def test_priors_over_http(tmp_path, forget_webq):
    root = tmp_path
    path = _new_study(root, "p", fit=False)
    client = TestClient(create_app(root / "studies"))
    before = _hashes(path)
    bad = {
        b"": "request body is empty",
        b"[method.webq\nkind=": "not valid TOML",
        b'[method.webq]\nkind = "quantizer"\ngmse = { quantizer = "os:system" }\n': "cannot name a callable",
        b'[method.webq]\nkind = "quantizer"\nfrom_posterior = { study = "../../elsewhere" }\n': "not a study of this server",
        b'[method.webq]\nkind = "quantizer"\nepm = { w4 = { dist = "beta", alpha = 0.0, beta = 1.0 } }\n': "alpha",
    }
    toml = {"content-type": "application/toml"}
    good = b'[method.webq]\nkind = "quantizer"\nepm = { w4 = { dist = "beta", alpha = 18.0, beta = 3.0 } }\n'
    for body, match in bad.items():
        r = client.post("/studies/p/priors", content=body, headers=toml)
        assert r.status_code == 422 and match in r.json()["detail"], (body, r.text)
        assert str(root) not in r.text  # no server paths in messages
        assert _hashes(path) == before, body  # nothing written
    for kind in ("text/plain", "application/x-www-form-urlencoded", None):  # what a web page sends cross-site
        r = client.post("/studies/p/priors", content=good, headers={"content-type": kind} if kind else {})
        assert r.status_code == 422 and "application/toml" in r.json()["detail"]
    r = client.post("/studies/p/priors", content=b"x" * (2 << 20), headers=toml)
    assert r.status_code == 422 and "at most" in r.json()["detail"]
    assert _hashes(path) == before
    r = client.post("/studies/p/priors", content=good, headers=toml)
    assert r.status_code == 200, r.text
    assert r.json()["imported"][0]["name"] == "webq" and "sweep resume" in r.json()["note"]
    saved = json.loads((path / "priors.json").read_text())
    assert [m["name"] for m in saved["methods"]] == ["webq"]
    r = client.post("/studies/p/priors", content=good, headers=toml)
    assert r.status_code == 422 and "--replace" in r.json()["detail"]
    assert client.post("/studies/p/priors", params={"replace": True}, content=good, headers=toml).status_code == 200


def test_bearer_token(served):
    client = TestClient(create_app(served, token=TOKEN))
    assert client.get("/health").status_code == 401
    assert client.get("/studies", headers={"Authorization": "Bearer wrong-token-of-some-length"}).status_code == 401
    ok = client.get("/studies/s/epm", params={"format": "s0.5"}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and ok.json()["observed"]
    page = client.get("/studies/s/report", params={"token": TOKEN})
    assert page.status_code == 200 and f"plots/loss.png?token={TOKEN}" in page.text  # the images carry it on
    assert client.get(f"/studies/s/plots/order.png?token={TOKEN}").status_code == 200
    # elsewhere the token goes in the header only (not into logs and histories), the schema behind it
    assert client.get("/studies/s/epm", params={"format": "s0.5", "token": TOKEN}).status_code == 401
    assert client.get("/openapi.json").status_code == 401
    assert "/studies/{study_id}/epm" in client.get("/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}).json()["paths"]
    assert client.get("/docs").status_code == 404


def test_only_loopback_host_names_are_answered_on_loopback(served):
    client = TestClient(create_app(served, trusted_hosts=["127.0.0.1", "localhost"]), base_url="http://localhost")
    assert client.get("/health").status_code == 200
    rebound = TestClient(create_app(served, trusted_hosts=["127.0.0.1", "localhost"]), base_url="http://evil.example")
    assert rebound.get("/health").status_code == 400


def test_token_rules(capsys):
    check_token("127.0.0.1", None)
    check_token("::1", None)
    check_token("localhost", None)
    check_token("0.0.0.0", TOKEN)
    with pytest.raises(InvalidInputError, match="not a loopback address"):
        check_token("0.0.0.0", None)
    with pytest.raises(InvalidInputError, match="at least 16"):
        check_token("127.0.0.1", "short")
    env = {k: v for k, v in os.environ.items() if k != "BAYES_EPM_TOKEN"}
    proc = subprocess.run([sys.executable, "-m", "bayes_epm.cli", "serve", "--host", "0.0.0.0", "--port", "8765"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2 and "needs a bearer token" in proc.stderr


def test_queries_keep_working_while_the_study_is_written(served):
    """A writer refits (versioned saves) and records runs while a reader queries: every answer is 200."""
    from bayes_epm.posterior_store import load_fit, save_fit
    from bayes_epm.store import Study

    path = served / "s"
    saved = load_fit(path / "posterior")
    client = TestClient(create_app(served))
    stop, errors = threading.Event(), []

    def write():
        try:
            while not stop.is_set():
                save_fit(path / "posterior", saved.idata, saved.runs, saved.diagnostics, saved.priors, {}, versioned=True)
                with Study.open(path) as st:
                    st.import_runs(saved.runs.head(1), "writer")
                stop.wait(0.2)  # a refit every 0.2 s: far more often than a sweep
        except Exception as exc:  # reported below, not swallowed
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        codes = [client.get("/studies/s/epm", params={"format": "w4a4"}).status_code for _ in range(25)]
        codes += [client.get("/studies/s").status_code for _ in range(5)]
    finally:
        stop.set()
        writer.join()
    assert not errors and set(codes) == {200}
    versions = sorted(p.name for p in (path / "fits").iterdir())
    assert len(versions) == 2 and (path / "posterior").resolve().name == versions[-1]  # the two newest kept


def test_report_command(served, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["report", str(served / "s")])
    assert exc.value.code == 0
    out = served / "s" / "report"
    for name in ("loss", "epm", "order", "rank", "trace", "frontier"):
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
    html = (out / "report.html").read_text()
    assert 'id="epm-table"' in html and "w4a4 <b>(target)</b>" in html and 'src="rank.png"' in html
    assert "max r-hat" in html and 'http-equiv="refresh"' not in html
    with pytest.raises(SystemExit) as exc:
        main(["report", str(served / "nothing")])
    assert exc.value.code == 2 and "no study" in capsys.readouterr().err
    # a study without a fit: the page says so, and draws what it can
    with pytest.raises(SystemExit) as exc:
        main(["report", str(served / "empty")])
    assert exc.value.code == 0
    html = (served / "empty" / "report" / "report.html").read_text()
    assert "No fit yet" in html and 'src="order.png"' in html and "loss.png" not in html


def test_dashboard_refreshes_only_while_the_sweep_runs(client, served):
    from bayes_epm.store import Study

    page = client.get("/studies/s/report").text  # runs imported seconds ago: counts as running
    assert 'http-equiv="refresh" content="15"' in page and 'id="epm-table"' in page
    assert 'http-equiv="refresh"' not in client.get("/studies/s/report", params={"refresh": 0}).text
    with Study.open(served / "s") as st:  # an hour later, nothing running: a still page
        st._db.execute("UPDATE runs SET updated = updated - 3600")
    assert 'http-equiv="refresh"' not in client.get("/studies/s/report").text


# ------------------------------------------------------------------------------ a real browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_dashboard_in_headless_chromium(served, tmp_path):
    """`bayes-epm serve` in a subprocess, and Chromium opening the dashboard: the EPM table is there
    and every plot decoded (each <img> marks itself on load)."""
    port = _free_port()
    env = {**os.environ, "BAYES_EPM_TOKEN": TOKEN}
    server = subprocess.Popen([sys.executable, "-m", "bayes_epm.cli", "serve", "--port", str(port), "--studies",
                               str(served)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/health",
                                             headers={"Authorization": f"Bearer {TOKEN}"})
                if json.load(urllib.request.urlopen(req, timeout=2))["status"] == "ok":
                    break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise AssertionError(f"the server did not start: {server.stdout.read()}")
                time.sleep(0.5)
        url = f"http://127.0.0.1:{port}/studies/s/report?refresh=0&token={TOKEN}"
        proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                               "--no-first-run", "--disable-background-networking", "--disable-component-update",
                               "--disable-sync", f"--user-data-dir={tmp_path / 'chromium'}",
                               "--virtual-time-budget=60000", "--timeout=120000", "--dump-dom", url],
                              capture_output=True, text=True, timeout=240)
        dom = proc.stdout
        assert 'id="epm-table"' in dom, (proc.returncode, proc.stderr[-2000:])
        for name in ("loss", "epm", "order", "rank", "trace", "frontier"):
            tag = re.search(rf'<img[^>]*id="plot-{name}"[^>]*>', dom)
            if not (tag and 'data-rendered="true"' in tag.group(0)):
                server.terminate()
                raise AssertionError(f"{name}: {tag and tag.group(0)}\nserver log:\n{server.communicate()[0][-4000:]}")
        assert "s0.5" in dom.split('id="epm-table"')[1].split("</table>")[0]
    finally:
        server.terminate()
        server.communicate(timeout=30)


def test_a_fit_saved_before_versions_becomes_the_first(fitted, tmp_path):
    from bayes_epm.posterior_store import load_fit, save_fit

    legacy = tmp_path / "posterior"
    shutil.copytree(fitted["dir"], legacy)  # a real directory, as studies kept their fit before versions
    saved = load_fit(legacy)
    save_fit(legacy, saved.idata, saved.runs, saved.diagnostics, saved.priors, {"n": 2}, versioned=True)
    assert legacy.is_symlink() and os.readlink(legacy) == os.path.join("fits", "000001")
    assert sorted(p.name for p in (tmp_path / "fits").iterdir()) == ["000000", "000001"]
    assert load_fit(legacy).meta["settings"] == {"n": 2}
    assert load_fit(tmp_path / "fits" / "000000").meta["settings"]["draws"] == 1000  # the old fit, kept
