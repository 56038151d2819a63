import json

import pytest

from bayes_epm.cli import main

TINY = ["--params", "2e4", "--tokens", "2e4", "--batch-size", "8", "--context", "64", "--eval-tokens", "4096"]


def run_cli(capsys, *argv):
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    return info.value.code, out, err


def test_train_json(capsys):
    code, out, err = run_cli(capsys, "train", *TINY, "--format", "s0.5-w4", "--seed", "0", "--json")
    assert code == 0, err
    result = json.loads(out)  # one JSON object and nothing else
    for key in ("loss", "params", "tokens", "format", "flops", "status", "sparsity_achieved", "wall_s",
                "tokens_per_s", "device"):
        assert key in result
    assert result["status"] == "ok" and result["format"] == "s0.5-w4"
    assert result["sparsity_achieved"] == pytest.approx(0.5, abs=1e-3)


def test_bit_options_are_an_alternative_to_format(capsys):
    code, out, _ = run_cli(capsys, "train", *TINY, "--sparsity", "0.5", "--w-bits", "4", "--json")
    assert code == 0
    assert json.loads(out)["format"] == "s0.5-w4"


def test_human_summary(capsys):
    code, out, _ = run_cli(capsys, "train", *TINY, "--format", "w4a4")
    assert code == 0
    assert "held-out loss" in out and "w4a4" in out


@pytest.mark.parametrize("args, match", [
    (["--format", "s1.5"], "sparsity"),
    (["--params", "-3"], "params"),
    (["--w-bits", "0"], "w_bits"),
    (["--data", "/nonexistent/corpus.txt"], "does not exist"),
    (["--params", "abc"], "params"),
    (["--format", "w4", "--w-bits", "4"], "either --format"),
    (["--device", "tpu"], "device"),
    (["--data-dtype", "int8"], "dtype"),
])
def test_bad_input_exits_2_with_one_line(capsys, args, match):
    argv = ["train", "--params", "2e4", "--tokens", "2e4", *args]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bayes-epm: error:")
    assert match in lines[0]


def test_unreadable_data_file(capsys, tmp_path):
    path = tmp_path / "corpus.bin"
    path.write_bytes(b"\0" * 7)
    code, _, err = run_cli(capsys, "train", "--params", "2e4", "--tokens", "2e4", "--data", str(path))
    assert code == 2 and "whole number" in err


def test_missing_option(capsys):
    code, _, err = run_cli(capsys, "train", "--tokens", "2e4")
    assert code == 2 and "--params" in err
