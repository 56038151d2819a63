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
    (["--eval-tokens", "100000000"], "windows"),
    (["--format", "2:16", "--params", "1e3"], "multiple of 16"),
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


def test_cuda_without_cuda_exits_2(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, out, err = run_cli(capsys, "train", *TINY, "--device", "cuda")
    assert code == 2 and out == "" and "no CUDA device" in err


def test_unexpected_error_is_one_line_and_exit_1(capsys, monkeypatch):
    import bayes_epm.workers.train as train_mod

    def boom(spec):
        raise OSError("disk on fire")

    monkeypatch.setattr(train_mod, "prepare", boom)
    monkeypatch.delenv("BAYES_EPM_DEBUG", raising=False)
    code, out, err = run_cli(capsys, "train", *TINY)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "disk on fire" in err


def test_failed_run_prints_strict_json(capsys, monkeypatch):
    from bayes_epm.models import GPT

    def broken(self, idx, targets=None):
        raise RuntimeError("simulated")

    monkeypatch.setattr(GPT, "forward", broken)
    code, out, _ = run_cli(capsys, "train", *TINY, "--json")
    assert code == 1
    result = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert result["status"] == "failed" and result["loss"] is None
