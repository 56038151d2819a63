import numpy as np
import pandas as pd
import pytest

from bayes_epm.errors import InvalidInputError
from pathlib import Path

from bayes_epm import published
from bayes_epm.published import load_published
from bayes_epm.runs import RunTableError, load_runs, validate_runs


def table(**cols):
    base = {"params": [1e6, 2e6, 4e6], "tokens": [2e7, 4e7, 8e7], "loss": [3.0, 2.8, 2.6]}
    base.update(cols)
    return pd.DataFrame(base)


def test_format_column_is_canonicalised():
    out = validate_runs(table(format=["dense", "w4a16", "s0.50"]), source="mine")
    assert list(out.columns) == ["params", "tokens", "loss", "format", "source"]
    assert out["format"].tolist() == ["dense", "w4", "s0.5"]
    assert (out["source"] == "mine").all()


def test_format_from_columns_and_missing_means_dense():
    out = validate_runs(table(sparsity=[0.0, 0.5, 0.5], w_bits=[16, 4, 16], a_bits=[16, 4, 16],
                              pattern=[None, "2:4", None]))
    assert out["format"].tolist() == ["dense", "2:4-w4a4", "s0.5"]
    assert validate_runs(table())["format"].tolist() == ["dense"] * 3


def test_bad_rows_are_all_listed_with_what_is_valid():
    bad = table(params=[1e6, -1, 4e6], loss=[3.0, 2.8, float("nan")], format=["dense", "w9", "s0.5"])
    with pytest.raises(RunTableError) as info:
        validate_runs(bad)
    msg = str(info.value)
    assert isinstance(info.value, InvalidInputError)
    assert "2 bad row(s)" in msg and "row 3" in msg and "row 4" in msg
    assert "params=-1" in msg and "w_bits=9" in msg and "loss=nan" in msg and "Valid:" in msg


@pytest.mark.parametrize("frame, match", [
    (pd.DataFrame({"params": [1.0], "loss": [2.0]}), "lacks required column"),
    (table(format=["dense"] * 3, w_bits=[4, 4, 4]), "both a 'format' column"),
    (table().iloc[0:0], "no rows"),
    (table(tokens=["a", "b", "c"]), "tokens='a'"),
])
def test_table_level_errors(frame, match):
    with pytest.raises(RunTableError, match=match):
        validate_runs(frame)


def test_files(tmp_path):
    path = tmp_path / "runs.csv"
    table(format=["dense", "w4", "w4a4"]).to_csv(path, index=False)
    out = load_runs(path)
    assert out["source"].tolist() == ["runs.csv"] * 3
    pq = tmp_path / "runs.parquet"
    table(format=["dense", "w4", "w4a4"], source=["a", "b", None]).to_parquet(pq)
    assert load_runs(pq)["source"].tolist() == ["a", "b", "runs.parquet"]
    other = tmp_path / "runs.txt"
    other.write_text("params,tokens,loss\n")
    with pytest.raises(RunTableError, match="unknown file type"):
        load_runs(other)
    with pytest.raises(RunTableError, match="does not exist"):
        load_runs(tmp_path / "missing.csv")


def test_chinchilla():
    runs, skipped = load_published("chinchilla")
    assert len(runs) == 245 and skipped.empty and (runs["format"] == "dense").all()
    raw = pd.read_csv(Path(published.__file__).parent / "data" / "published" / "chinchilla_approach3.csv")
    assert np.allclose(runs["tokens"], raw["Training FLOP"] / (6 * raw["Model Size"]))  # D = C / (6N)
    runs, skipped = published.chinchilla(epoch_filter=True)
    assert len(runs) == 240 and len(skipped) == 5
    assert (skipped["tokens"] / skipped["params"] < 0.41).all() and skipped["loss"].min() > runs["loss"].max()


def test_sparse_t5():
    runs, skipped = load_published("sparse_t5")
    assert len(runs) == 48 and skipped.empty
    assert set(runs["format"]) == {"dense", "s0.5", "s0.75", "s0.875"}
    assert runs["params"].min() == pytest.approx(24 * 12 * 768**2 * 0.0078125)


def test_quest():
    runs, skipped = load_published("quest")
    assert len(runs) + len(skipped) == 104
    assert len(skipped) == 4 and skipped["reason"].str.contains("FP4").all()  # said, not dropped silently
    fmts = set(runs["format"])
    assert {"dense", "w4a4:hadamard_trust", "w4:half_hadamard_trust", "2:4-w4a4:hadamard_trust",
            "w1a1:clip", "w8a8:trust"} <= fmts
    assert (runs["format"] == "dense").sum() == 6


def test_unknown_published_table():
    with pytest.raises(InvalidInputError, match="valid: chinchilla"):
        load_published("gpt5")
