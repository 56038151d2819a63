import json

import numpy as np
import pytest

from bayes_epm.cli import main
from bayes_epm.errors import InvalidInputError
from bayes_epm.law import loss
from bayes_epm.posterior_store import load_fit
from bayes_epm.queries import compare, epm, predict


def test_save_load_round_trip(fitted):
    saved = load_fit(fitted["dir"])
    assert saved.runs.equals(fitted["runs"])
    assert np.array_equal(saved.idata.posterior["epm"].values, fitted["idata"].posterior["epm"].values)
    assert saved.diagnostics == fitted["diagnostics"]


def test_missing_posterior_dir(tmp_path):
    with pytest.raises(InvalidInputError, match="no fitted posterior"):
        load_fit(tmp_path / "nope")


def test_observed_epm(fitted):
    out = epm(fitted["idata"], "s0.5")
    assert out["observed"] and out["format"] == "s0.5"
    lo, hi = out["hdi_90"]
    assert lo < out["mean"] < hi and abs(out["mean"] - 0.80) < 0.05
    assert "hdi_80" in epm(fitted["idata"], "s0.5", hdi=0.8)


def test_unseen_formats_are_predicted_from_factors(fitted):
    # w4a4-s0.5 was fitted; w8a8 (unseen levels of fitted factors), 2:4 (unseen level) and
    # s0.75-w4 (unseen combination of a level seen and one not) are predictions
    for fmt in ("w8a8", "2:4", "s0.75-w4", "w4a4:absmax"):
        out = epm(fitted["idata"], fmt)
        assert not out["observed"], fmt
        lo, hi = out["hdi_90"]
        assert 0 < lo < out["mean"] < hi, fmt
    w8, w2 = epm(fitted["idata"], "w8a8"), epm(fitted["idata"], "w2a2")
    assert w8["mean"] > w2["mean"]  # the capacity curve orders bit widths
    combo = epm(fitted["idata"], "s0.5-w4")  # both levels seen: product of their posteriors
    assert abs(combo["mean"] - 0.8 * 0.9) < 0.08


def test_compare_is_antisymmetric(fitted):
    ab = compare(fitted["idata"], "s0.5", "w4a4")
    ba = compare(fitted["idata"], "w4a4", "s0.5")
    assert ab["p_a_greater"] == pytest.approx(1 - ba["p_a_greater"])
    assert ab["difference"]["mean"] == pytest.approx(-ba["difference"]["mean"])
    assert ab["p_a_greater"] > 0.9  # truth: 0.80 vs 0.75


def test_predict_covers_the_truth(fitted):
    truth = fitted["truth"]
    out = predict(fitted["idata"], 3e8, 6e9, "w4a4")
    expected = loss(3e8, 6e9, 0.75, truth.A, truth.B, truth.E, truth.alpha, truth.beta)
    lo, hi = out["loss"]["hdi_90"]
    assert lo <= expected <= hi
    with pytest.raises(InvalidInputError):
        predict(fitted["idata"], -1, 6e9, "w4a4")


def run_cli(capsys, *argv):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def test_query_commands(fitted, capsys):
    d = fitted["dir"]
    code, out, _ = run_cli(capsys, "epm", d, "--format", "w8a8", "--json")
    got = json.loads(out)
    assert code == 0 and set(got) == {"format", "mean", "sd", "hdi_90", "observed", "source"}
    assert got["observed"] is False and got["source"] == "hierarchy"
    code, out, _ = run_cli(capsys, "compare", d, "s0.5", "w4a4", "--json")
    assert code == 0 and 0 <= json.loads(out)["p_a_greater"] <= 1
    code, out, _ = run_cli(capsys, "predict", d, "--params", "3e8", "--tokens", "6e9", "--format", "w4", "--json")
    assert code == 0 and "hdi_90" in json.loads(out)["loss"]
    code, out, _ = run_cli(capsys, "epm", d, "--format", "w4a4")
    assert code == 0 and "EPM of w4a4" in out


@pytest.mark.parametrize("argv, match", [
    (["epm", "{missing}", "--format", "w4"], "no fitted posterior"),
    (["epm", "{dir}", "--format", "w9"], "w_bits"),
    (["epm", "{dir}", "--format", "w4", "--hdi", "1.5"], "hdi"),
    (["predict", "{dir}", "--params", "-1", "--tokens", "1e9"], "params"),
])
def test_query_bad_input(fitted, capsys, tmp_path, argv, match):
    argv = [a.format(dir=fitted["dir"], missing=tmp_path / "none") for a in argv]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == "" and match in err and len(err.strip().splitlines()) == 1


def test_fit_command(tmp_path, capsys, fitted):
    runs = tmp_path / "runs.csv"
    fitted["runs"].to_csv(runs, index=False)
    code, out, err = run_cli(capsys, "fit", runs, "--out", tmp_path / "post", "--draws", "200", "--tune", "200",
                             "--chains", "2", "--seed", "1", "--json")
    result = json.loads(out)
    assert set(result) == {"law", "epm", "diagnostics", "posterior"}
    assert set(result["epm"]) == {"s0.5", "w4a4", "s0.5-w4a4", "w4"}
    assert set(result["law"]) == {"E", "A", "B", "alpha", "beta"}
    diag = result["diagnostics"]
    assert {"r_hat_max", "ess_bulk_min", "divergences", "chains", "draws", "converged", "sampling_s"} <= set(diag)
    assert code == (0 if diag["converged"] else 1)
    if not diag["converged"]:  # 200 draws: a fit this short is said to be unconverged, loudly
        assert "did not converge" in err
    assert (tmp_path / "post" / "posterior.nc").is_file()


def test_fit_bad_table(tmp_path, capsys):
    runs = tmp_path / "runs.csv"
    runs.write_text("params,tokens,loss,format\n1e6,1e7,3.0,dense\n-5,1e7,3.0,w9\n")
    code, out, err = run_cli(capsys, "fit", runs, "--out", tmp_path / "post")
    assert code == 2 and "row 3" in err and not (tmp_path / "post").exists()
