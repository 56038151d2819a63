"""Decisions: storage per format, recommend and frontier, against truths known analytically."""

import json
import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from bayes_epm.cli import main
from bayes_epm.decisions import (bits_per_param, family, frontier, max_params, parse_bytes, recommend, storage_bits,
                                 storage_breakdown)
from bayes_epm.errors import InvalidInputError
from bayes_epm.law import loss
from bayes_epm.posterior_store import load_fit, open_fit
from bayes_epm.queries import compare


# ------------------------------------------------------------------------------ storage


def test_dense_stores_16_bits_per_parameter():
    for n in (1e4, 1e6, 1e9):
        assert float(bits_per_param("dense", n)) == pytest.approx(16.0)


def test_storage_parts_follow_the_documented_convention():
    from bayes_epm.decisions import _width

    n = 1e9
    layers, d = _width(n)
    weights = 12 * d * d * layers  # the linear layers' weights; the rest are biases and LayerNorms
    assert layers * (12 * d * d + 13 * d) + 2 * d == pytest.approx(n)
    parts = storage_breakdown("w4", n)
    assert parts["values"] == pytest.approx(4 * weights)
    assert parts["scales"] == pytest.approx(weights * 12 / d)  # 9d rows of 16 bits per 12 d^2 weights
    assert float(parts["index"]) == 0.0
    assert parts["uncompressed"] == pytest.approx(16 * (n - weights))
    assert 0.999 < weights / n < 1.0  # at 1e9 the biases and LayerNorms are a sliver
    # sparsity metadata: a bitmask (1 bit per position) unless 16-bit indices of the kept weights are smaller
    for fmt, index in (("s0.5", 1.0), ("s0.9", 1.0), ("s0.95", 0.8), ("2:4", 1.0), ("1:4", 0.5), ("1:8", 0.375)):
        p = storage_breakdown(fmt, n)
        assert float(p["index"] / weights) == pytest.approx(index), fmt
        assert float(p["scales"]) == 0.0, fmt
    assert float(storage_breakdown("s0.5-w4a4", n)["values"] / weights) == pytest.approx(2.0)
    # activation bits store nothing
    assert float(storage_bits("w4a4", n)) == float(storage_bits("w4", n))
    assert float(bits_per_param("w8", n)) < float(bits_per_param("s0.5", n)) < 16


def test_storage_grows_with_size_and_max_params_inverts_it():
    sizes = np.geomspace(1e3, 1e11, 200)
    for fmt in ("dense", "w4", "s0.75-w2", "2:4-w4a4"):
        bits = storage_bits(fmt, sizes)
        assert np.all(np.diff(bits) > 0), fmt
        for budget in (1e5, 3.3e7, 2e10):
            n = max_params(fmt, budget)
            assert float(storage_bits(fmt, n)) / 8 == pytest.approx(budget, rel=1e-9), fmt
    # the overheads shrink with width: small models pay more per parameter
    assert float(bits_per_param("w4", 1e5)) > float(bits_per_param("w4", 1e9)) > 4


def test_max_params_below_one_bit_per_parameter():
    for fmt in ("1:8-w1", "s0.99-w1", "s0.95-w2"):  # under 1 bit per parameter: more parameters than bits
        assert float(bits_per_param(fmt, 1e9)) < 1.0, fmt
        n = max_params(fmt, 1e8)
        assert n > 8e8 and float(storage_bits(fmt, n)) / 8 == pytest.approx(1e8, rel=1e-9), fmt


def test_families():
    assert [family(f) for f in ("dense", "w4", "w4a4", "w16a8", "s0.5", "2:4-w4")] == [
        "dense", "weight-only", "weights+activations", "activations-only", "sparse", "sparse+quantized"]


@pytest.mark.parametrize("value,expected", [("2e9", 2e9), ("512MB", 5.12e8), ("4GiB", 4 * 2**30), (" 1.5 kb ", 1500.0),
                                            (3e6, 3e6), ("7B", 7.0)])
def test_parse_bytes(value, expected):
    assert parse_bytes(value) == pytest.approx(expected)


@pytest.mark.parametrize("value", [0, -1, "-3GB", float("nan"), float("inf"), "12 parsecs", "GB", "", True])
def test_parse_bytes_rejects(value):
    with pytest.raises(InvalidInputError, match="memory_bytes"):
        parse_bytes(value)


# ------------------------------------------------------------------------------ recommend


def _true_loss(truth, fmt, n, d):
    return float(loss(n, d, truth.epm[fmt], truth.A, truth.B, truth.E, truth.alpha, truth.beta))


def test_memory_bound_recommends_the_analytic_best(fitted):
    """Fixed tokens and a memory budget: each format trains the largest model it stores; the truth's
    best is the format with the most effective parameters per stored bit (w4 here: 0.9 / 4.0 bits)."""
    truth, saved = fitted["truth"], load_fit(fitted["dir"])
    memory, tokens = 1e9, 2e10
    truth_loss = {f: _true_loss(truth, f, max_params(f, memory), tokens) for f in truth.epm}
    best = min(truth_loss, key=truth_loss.get)
    assert best == "w4"
    out = recommend(saved, memory, tokens=tokens)
    recs = out["recommendations"]
    assert recs[0]["format"] == best and recs[0]["p_best"] >= 0.95
    assert sum(r["p_best"] for r in recs) == pytest.approx(1.0)
    assert {r["format"] for r in recs} == set(truth.epm) and out["excluded"] == []
    for r in recs:  # the size is the memory limit, and the true loss lies in the HDI
        assert r["params"] == pytest.approx(max_params(r["format"], memory))
        assert r["stored_bytes"] == pytest.approx(memory)
        assert r["tokens"] == tokens and r["memory_bound"] == 1.0
        lo, hi = r["loss"]["hdi_90"]
        assert lo < truth_loss[r["format"]] < hi, r["format"]
    assert out["budget"]["regime"] == "2e+10 training tokens"
    assert out["diagnostics"]["converged"]


def test_compute_bound_follows_the_compute_optimal_split(fitted):
    """Ample memory and a FLOP budget: the best format is the one of highest EPM (dense), and its
    size is the loss-minimising N of the law for C, which the truth's law puts inside our HDI."""
    truth, saved = fitted["truth"], load_fit(fitted["dir"])
    flops = 1e20
    out = recommend(saved, "1TB", train_flops=flops)
    recs = {r["format"]: r for r in out["recommendations"]}
    assert out["recommendations"][0]["format"] == "dense" and recs["dense"]["p_best"] >= 0.9
    for fmt, r in recs.items():
        res = minimize_scalar(lambda ln: _true_loss(truth, fmt, math.exp(ln), flops / (6 * math.exp(ln))),
                              bounds=(math.log(1e6), math.log(1e12)), method="bounded", options={"xatol": 1e-6})
        n_true = math.exp(res.x)
        lo, hi = r["params_hdi_90"]
        assert lo < n_true < hi, (fmt, lo, n_true, hi)
        assert r["tokens"] == pytest.approx(flops / (6 * r["params"]), rel=0.05)
        assert r["memory_bound"] == 0.0
        assert r["loss"]["hdi_90"][0] < res.fun < r["loss"]["hdi_90"][1], fmt


def test_budgets_only_the_smallest_models_fit(fitted):
    saved = load_fit(fitted["dir"])  # runs from 1e7 parameters: the smallest size considered
    out = recommend(saved, "6MB", tokens=1e9)
    fits = [r["format"] for r in out["recommendations"]]
    assert set(fits) == {"w4", "w4a4", "s0.5-w4a4"}
    excluded = {e["format"]: e for e in out["excluded"]}
    assert set(excluded) == {"dense", "s0.5"}
    assert excluded["dense"]["bytes_needed"] == pytest.approx(2e7)
    assert all(e["bytes_needed"] > 6e6 and "1e+07 parameters" in e["reason"] for e in excluded.values())
    assert all(r["params"] >= 1e7 for r in out["recommendations"])
    # a smaller floor lets every format in; sizes below the runs are marked as extrapolated
    out = recommend(saved, "6MB", tokens=1e9, min_params=1e6)
    assert out["excluded"] == [] and len(out["recommendations"]) == 5
    assert {r["format"] for r in out["recommendations"] if r["extrapolated"]} == {"dense", "s0.5"}
    with pytest.raises(InvalidInputError, match=r"too small for every candidate.*needs at least 3\.86e\+06 bytes \(in s0\.5-w4a4\)"):
        recommend(saved, "1MB", tokens=1e9)


@pytest.mark.parametrize("kwargs,match", [
    ({"memory_bytes": 0}, "memory_bytes=0 is not valid"),
    ({"memory_bytes": -5e9}, "memory_bytes=-5000000000.0 is not valid"),
    ({"memory_bytes": "lots"}, "memory_bytes='lots' is not valid"),
    ({"memory_bytes": 1e9, "tokens": 1e9, "train_flops": 1e20}, "at most one of tokens, tokens_per_param and train_flops"),
    ({"memory_bytes": 1e9, "tokens": 0}, "tokens=0 is not valid"),
    ({"memory_bytes": 1e9, "train_flops": 1e9}, "train_flops=1e\\+09 is too small"),
    ({"memory_bytes": 1e9, "formats": ["w9"]}, "w9"),
    ({"memory_bytes": 1e9, "hdi": 1.5}, "hdi=1.5"),
    ({"memory_bytes": 1e9, "min_params": -1}, "min_params=-1"),
])
def test_recommend_bad_input(fitted, kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        recommend(load_fit(fitted["dir"]), **kwargs)


def test_untrained_candidates_are_predicted_and_marked(fitted):
    out = recommend(load_fit(fitted["dir"]), "1GB", formats=["w4", "w3", "w8a8"])
    recs = {r["format"]: r for r in out["recommendations"]}
    assert recs["w4"]["source"] == "posterior" and recs["w3"]["source"] == "hierarchy"
    assert recs["w3"]["epm"]["sd"] > recs["w4"]["epm"]["sd"]  # never trained: wider
    assert out["budget"]["unlimited_tokens"] and recs["w4"]["tokens"] is None


def test_draws_do_not_depend_on_the_other_candidates(fitted):
    saved = load_fit(fitted["dir"])
    one = recommend(saved, "1GB", formats=["w3", "w8a8", "s0.75-w4"])["recommendations"]
    two = recommend(saved, "1GB", formats=["s0.75-w4", "dense", "w8a8", "w3"])["recommendations"]
    by_format = {r["format"]: r for r in two}
    for r in one:
        assert r["epm"] == by_format[r["format"]]["epm"], r["format"]


def test_levels_shared_by_formats_are_drawn_once(fitted):
    # w3 is never trained: asked together, both sides see the same draw of its level
    assert compare(fitted["idata"], "w3", "w3")["difference"]["sd"] == 0.0
    assert compare(fitted["idata"], "w3", "w3a4")["p_a_greater"] > 0.5  # activations only remove


def test_cli_matches_python(fitted, cli_json):
    saved = open_fit(fitted["dir"])
    assert cli_json(["recommend", str(fitted["dir"]), "--memory-bytes", "1GB", "--train-flops", "1e20",
                              "--formats", "dense,w4", "--formats", "w3"]) == json.loads(json.dumps(
        recommend(saved, 1e9, train_flops=1e20, formats=["dense", "w4", "w3"])))
    assert cli_json(["frontier", str(fitted["dir"]), "--tokens", "1e10", "--points", "5"]) == json.loads(
        json.dumps(frontier(saved, tokens=1e10, points=5)))


@pytest.mark.parametrize("argv,match", [
    (["recommend", "{fit}", "--memory-bytes", "-1"], "memory_bytes='-1' is not valid"),
    (["recommend", "{fit}", "--memory-bytes", "1GB", "--tokens", "1e9", "--train-flops", "1e20"],
     "at most one of --train-flops, --tokens and --tokens-per-param"),
    (["recommend", "{fit}", "--memory-bytes", "1kB"], "too small for every candidate"),
    (["recommend", "{fit}"], "--memory-bytes"),
    (["recommend", "{fit}", "--memory-bytes", "1GB", "--formats", ","], "--formats is empty"),
    (["frontier", "{fit}", "--min-bytes", "1GB"], "give both min_bytes and max_bytes"),
    (["frontier", "{fit}", "--min-bytes", "1GB", "--max-bytes", "1MB"], "must be below max_bytes"),
    (["frontier", "{fit}", "--points", "1"], "points=1 is not valid"),
    (["recommend", "/nonexistent", "--memory-bytes", "1GB"], "no fitted posterior"),
])
def test_cli_bad_input(fitted, capsys, argv, match):
    with pytest.raises(SystemExit) as exc:
        main([a.replace("{fit}", str(fitted["dir"])) for a in argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1, err


def test_recommend_text_output(fitted, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["recommend", str(fitted["dir"]), "--memory-bytes", "6MB", "--tokens", "1e9"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    assert "w4" in out and "P(best)" in out and "does not fit: dense" in out


@pytest.fixture(scope="module")
def tied(tmp_path_factory):
    """Two formats that tie by construction: the same runs (loss for loss) and the same prior on their
    levels, w4 with the rms quantizer and w4:absmax; literature priors off (they cover w4 only)."""
    from bayes_epm.inference import fit
    from bayes_epm.model import Priors
    from bayes_epm.posterior_store import save_fit
    from bayes_epm.priors import LevelPrior, PriorSet, parse_dist
    from bayes_epm.simulate import Truth, simulate_runs

    truth = Truth(epm={"dense": 1.0, "w4": 0.85})
    runs = simulate_runs(truth, list(np.geomspace(1e7, 1e9, 4)), [10, 20, 40, 80], list(truth.epm), np.random.default_rng(1))
    twin = runs[runs["format"] == "w4"].assign(format="w4:absmax")
    runs = __import__("pandas").concat([runs, twin], ignore_index=True)
    dist = parse_dist({"dist": "beta", "alpha": 8.0, "beta": 2.0}, "test")
    prior_set = PriorSet(levels=(LevelPrior("rms", "weights", "w4:rms", dist, "test"),
                                 LevelPrior("absmax", "weights", "w4:absmax", dist, "test")), literature=False)
    priors = Priors(methods=prior_set)
    idata, diag = fit(runs, draws=1000, tune=500, chains=2, seed=5, priors=priors)
    out = tmp_path_factory.mktemp("tied")
    save_fit(out, idata, runs, diag, priors, {})
    return out


def test_a_tie_gives_even_odds(tied):
    saved = load_fit(tied)
    assert saved.diagnostics.converged
    out = recommend(saved, "1GB", tokens=1e10)
    p = {r["format"]: r["p_best"] for r in out["recommendations"]}
    assert p["dense"] < 0.01
    assert 0.35 < p["w4"] < 0.65 and 0.35 < p["w4:absmax"] < 0.65, p
    assert p["w4"] + p["w4:absmax"] > 0.99
    mcse = {r["format"]: r["p_best_mcse"] for r in out["recommendations"]}
    assert 0.003 < mcse["w4"] < 0.05  # correlated draws: larger than sqrt(p(1-p)/n), still small


# ------------------------------------------------------------------------------ frontier


def test_frontier(fitted, tmp_path):
    saved = load_fit(fitted["dir"])
    formats = ["dense", "w8", "w4", "w2", "w4a4", "s0.5", "s0.5-w4a4"]
    out = frontier(saved, formats=formats, points=12)
    rows = {r["format"]: r for r in out["formats"]}
    assert [r["format"] for r in out["formats"]][0] == "dense"  # ordered by stored bits, most first
    assert rows["dense"]["bits_per_effective_param"]["mean"] == pytest.approx(16.0)
    w4 = rows["w4"]  # bits per effective parameter = bits per parameter / EPM, draw by draw
    assert w4["bits_per_effective_param"]["mean"] > w4["bits_per_param"] / w4["epm"]["mean"] * 0.999
    assert sum(r["p_lowest"] for r in out["formats"]) == pytest.approx(1.0)
    steps = {(s["from"], s["to"]): s for s in out["steps"]}
    # the truth: w4 (0.9) costs 4.5 bits per effective parameter, w4a4 (0.75) 5.4, s0.5 (0.8) 11.3
    assert steps[("dense", "w8")]["verdict"] == "pays" and steps[("w8", "w4")]["verdict"] == "pays"
    assert steps[("dense", "s0.5")]["p_pays"] > 0.99
    assert ("w4", "w2") in steps and ("dense", "s0.5-w4a4") in steps
    # activation bits store nothing: no "step to fewer bits" from dense to w16a8
    assert not any(s["to"] == "w16a8" for s in frontier(saved, formats=["dense", "w16a8", "w8"], points=2)["steps"])
    # the curve: budgets ascend, losses fall with memory, each point's p_best sums to 1
    curve = out["curve"]
    assert [p["memory_bytes"] for p in curve] == sorted(p["memory_bytes"] for p in curve) and len(curve) == 12
    first_dense = next(p for p in curve if "dense" in p["formats"])
    assert "dense" not in curve[0]["formats"] and first_dense["memory_bytes"] >= 2e7  # 1e7 params at 2 bytes
    for p in curve:
        assert sum(v["p_best"] for v in p["formats"].values()) == pytest.approx(1.0)
        assert p["envelope"]["mean"] <= min(v["loss"]["mean"] for v in p["formats"].values()) + 1e-12
    envelope = [p["envelope"]["mean"] for p in curve]
    assert all(a > b for a, b in zip(envelope, envelope[1:]))
    assert out["regions"][0]["from_bytes"] == curve[0]["memory_bytes"]
    assert out["regions"][-1]["to_bytes"] == curve[-1]["memory_bytes"]

    from bayes_epm.plots import plot_frontier

    png = plot_frontier(out, tmp_path / "frontier.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_frontier_budgets_and_bad_input(fitted):
    saved = load_fit(fitted["dir"])
    out = frontier(saved, budgets=["1GB", "10MB"], tokens_per_param=20)
    assert [p["memory_bytes"] for p in out["curve"]] == [1e7, 1e9]
    assert out["regime"]["tokens_per_param"] == 20
    with pytest.raises(InvalidInputError, match="budget=0 is not valid"):
        frontier(saved, budgets=[0])
    with pytest.raises(InvalidInputError, match="points=1 is not valid"):
        frontier(saved, points=1)
    span = frontier(saved, min_bytes="1MB", max_bytes="1GB", points=4)["curve"]
    assert [p["memory_bytes"] for p in span] == pytest.approx([1e6, 1e7, 1e8, 1e9])
