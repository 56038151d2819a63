import math

import numpy as np
import pytest

from bayes_epm.errors import CompressionError, SpecError
from bayes_epm.models import GPT
from bayes_epm.workers.data import load_tokens
from bayes_epm.workers.spec import RunResult, TrainSpec
from bayes_epm.workers.train import lr_at, train


def unigram_entropy(tokens: np.ndarray) -> float:
    p = np.bincount(tokens, minlength=256) / tokens.size
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def test_tiny_model_learns_below_unigram_entropy():
    data = load_tokens("builtin")
    h1 = unigram_entropy(data.train)
    result = train(TrainSpec(params=2e4, tokens=3e5, batch_size=16, context=64, eval_tokens=16384))
    assert result.status == "ok", result.error
    assert result.loss < h1 - 0.5, (result.loss, h1)  # uses context, not just byte frequencies


def test_result_fields(tiny_spec_kw):
    spec = TrainSpec(**tiny_spec_kw, format="s0.5-w4a8")
    r = train(spec)
    assert r.status == "ok" and math.isfinite(r.loss) and r.error == ""
    assert r.params == GPT.for_params(spec.params).non_embedding_params()
    assert r.tokens == spec.steps * spec.batch_size * spec.context >= spec.tokens
    assert r.flops == 6.0 * r.params * r.tokens
    assert r.sparsity_achieved == pytest.approx(0.5, abs=1e-3)
    assert r.format == "s0.5-w4a8" and r.device == "cpu" and r.seed == 0
    assert r.tokens_per_s > 0 and r.wall_s > 0 and len(r.data_sha256) == 64
    assert RunResult.from_dict(r.to_dict()) == r
    assert TrainSpec.from_dict(r.spec) == spec


def test_same_seed_same_loss_other_seed_other_loss(tiny_spec_kw):
    a = train(TrainSpec(**tiny_spec_kw, seed=1, format="w4a4"))
    b = train(TrainSpec(**tiny_spec_kw, seed=1, format="w4a4"))
    c = train(TrainSpec(**tiny_spec_kw, seed=2, format="w4a4"))
    assert a.loss == b.loss
    assert a.loss != c.loss


def test_nan_loss_is_a_diverged_result_not_an_exception(tiny_spec_kw, monkeypatch):
    forward = GPT.forward
    calls = {"n": 0}

    def poisoned(self, idx, targets=None):
        logits, loss = forward(self, idx, targets)
        calls["n"] += 1
        if self.training and calls["n"] == 3:
            loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(GPT, "forward", poisoned)
    r = train(TrainSpec(**tiny_spec_kw))
    assert r.status == "diverged" and r.diverged_step == 2
    assert math.isnan(r.loss) and "nan" in r.error


def test_exception_during_training_is_a_failed_result(tiny_spec_kw, monkeypatch):
    forward = GPT.forward
    calls = {"n": 0}

    def broken(self, idx, targets=None):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("simulated kernel failure")
        return forward(self, idx, targets)

    monkeypatch.setattr(GPT, "forward", broken)
    spec = TrainSpec(**tiny_spec_kw)
    r = train(spec)
    assert r.status == "failed" and "simulated kernel failure" in r.error
    assert math.isnan(r.loss)
    assert r.tokens == 3 * spec.tokens_per_step and r.flops == 6.0 * r.params * r.tokens  # work done is counted


def test_cuda_asked_without_cuda_is_bad_input(tiny_spec_kw, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a CPU-only machine
    with pytest.raises(SpecError, match="no CUDA device"):
        train(TrainSpec(**tiny_spec_kw, device="cuda"))


def test_format_that_does_not_fit_raises_before_training(tiny_spec_kw):
    with pytest.raises(CompressionError):
        train(TrainSpec(**{**tiny_spec_kw, "params": 1e3}, format="2:16"))


@pytest.mark.parametrize("kw, match", [
    (dict(params=-3), "params"), (dict(params=10), "too small"), (dict(tokens=0), "tokens"),
    (dict(tokens=float("nan")), "tokens"), (dict(format="s1.5"), "sparsity"), (dict(batch_size=0), "batch_size"),
    (dict(context=2.5), "context"), (dict(seed=-1), "seed"), (dict(lr=-1.0), "lr"), (dict(device="tpu"), "device"),
    (dict(warmup_frac=2.0), "warmup_frac"), (dict(eval_tokens=10, context=64), "eval_tokens"),
    (dict(params=1e12), "too large"), (dict(context=1 << 20), "too long"),
])
def test_bad_specs(kw, match):
    base = dict(params=2e4, tokens=2e4)
    with pytest.raises(SpecError, match=match):
        TrainSpec(**{**base, **kw})


def test_unknown_spec_key():
    with pytest.raises(SpecError, match="unknown spec keys"):
        TrainSpec.from_dict({"params": 2e4, "tokens": 2e4, "lrate": 1})


def test_lr_schedule():
    peak, steps = 1e-2, 100
    assert lr_at(0, steps, peak, 0.05, 0.1) == pytest.approx(peak / 5)
    assert lr_at(4, steps, peak, 0.05, 0.1) == pytest.approx(peak)
    assert lr_at(99, steps, peak, 0.05, 0.1) == pytest.approx(0.1 * peak, rel=0.01)
    values = [lr_at(t, steps, peak, 0.05, 0.1) for t in range(5, steps)]
    assert values == sorted(values, reverse=True)
