import pytest
import torch
from torch import nn

from bayes_epm.errors import CompressionError
from bayes_epm.models import GPT, Format, compress_, sparsity_schedule
from bayes_epm.models.sparsity import cubic_sparsity


def test_cubic_schedule_shape():
    total, s = 100, 0.8
    assert cubic_sparsity(0, total, s) == 0.0
    assert cubic_sparsity(24, total, s) == 0.0
    assert cubic_sparsity(25, total, s) == 0.0  # starts at 25% ...
    assert cubic_sparsity(50, total, s) == pytest.approx(s * (1 - 0.5**3))
    assert cubic_sparsity(75, total, s) == s  # ... and ends at 75%
    assert cubic_sparsity(99, total, s) == s
    values = [cubic_sparsity(t, total, s) for t in range(total)]
    assert values == sorted(values)  # never decreases


def _compressed(fmt: str, params: float = 2e4):
    torch.manual_seed(0)
    model = GPT.for_params(params)
    layers = compress_(model, fmt)
    return model, layers, sparsity_schedule(layers, Format.parse(fmt), total_steps=40, interval=2)


def _train_some(model, schedule, steps=40):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0))
    masks = []
    for step in range(steps):
        schedule.step(step)
        masks.append([layer.weight_mask.clone() for layer in schedule.modules])
        _, loss = model(x, x)
        loss.backward()
        opt.step()
        opt.zero_grad()
    schedule.finalize()
    return masks


@pytest.mark.parametrize("fmt, s", [("s0.5", 0.5), ("s0.875", 0.875), ("s0.3", 0.3), ("s0.5-w4a4", 0.5)])
def test_final_unstructured_sparsity_is_exact_per_tensor(fmt, s):
    model, layers, schedule = _compressed(fmt)
    masks = _train_some(model, schedule)
    for layer in layers:
        w = layer.weight_orig * layer.weight_mask  # what the forward pass uses
        assert int((w == 0).sum()) == round(s * w.numel())
    assert schedule.achieved() == pytest.approx(s, abs=1e-3)
    # cumulative: once pruned, a weight stays pruned
    for before, after in zip(masks, masks[1:]):
        for b, a in zip(before, after):
            assert torch.all(a <= b)


@pytest.mark.parametrize("pattern", ["2:4", "1:4", "2:8"])
def test_every_group_is_n_of_m_at_the_end(pattern):
    n, m = (int(v) for v in pattern.split(":"))
    model, layers, schedule = _compressed(pattern)
    masks = _train_some(model, schedule)
    for layer in layers:
        w = layer.weight_orig * layer.weight_mask  # what the forward pass uses
        groups = (w != 0).reshape(w.shape[0], -1, m).sum(-1)
        assert torch.all(groups == n)
    mid = masks[len(masks) // 2]  # halfway, partly pruned and never more than m-n per group
    for mask in mid:
        pruned = (mask == 0).reshape(mask.shape[0], -1, m).sum(-1)
        assert torch.all(pruned <= m - n)
        assert 0 < int((mask == 0).sum()) < mask.numel() * (m - n) / m


def test_pruned_weights_get_no_gradient_and_stay_zero_in_forward():
    model, layers, schedule = _compressed("s0.5")
    schedule.set_sparsity(0.5)
    x = torch.randint(0, 256, (2, 16))
    _, loss = model(x, x)
    loss.backward()
    for layer in layers:
        assert torch.all(layer.weight_orig.grad[layer.weight_mask == 0] == 0)
        assert torch.all(layer.weight[layer.weight_mask == 0] == 0)


def test_nm_that_does_not_divide_the_layer_is_refused_before_any_change():
    model = nn.Sequential(nn.Linear(6, 8), nn.Linear(8, 4))  # 6 inputs: not whole groups of 4
    with pytest.raises(CompressionError, match="multiple of 4"):
        compress_(model, "2:4")
    assert all(type(m) is nn.Linear for m in model)  # nothing was swapped


def test_short_run_still_reaches_the_target():
    model, layers, schedule = _compressed("s0.75")
    schedule.step(0)
    schedule.finalize()
    assert schedule.achieved() == pytest.approx(0.75, abs=1e-3)


@pytest.mark.parametrize("pattern, shape", [("1:3", (768, 3072)), ("3:7", (700, 1400)), ("2:4", (64, 128))])
def test_nm_is_exact_for_any_m_on_large_tensors(pattern, shape):
    n, m = (int(v) for v in pattern.split(":"))
    layer = nn.Linear(shape[1], shape[0])
    layers = compress_(nn.Sequential(layer), pattern)
    schedule = sparsity_schedule(layers, Format.parse(pattern), total_steps=10)
    schedule.set_sparsity(schedule.target / 2)
    schedule.finalize()
    w = layers[0].weight_orig * layers[0].weight_mask
    nonzero = (w != 0).reshape(shape[0], -1, m).sum(-1)
    assert torch.all(nonzero == n)
