import pytest
import torch

from bayes_epm.models import GPT, compress_, non_embedding_params, shape_for_params
from bayes_epm.models.compress import CompressedLinear


@pytest.mark.parametrize("params", [1e3, 5e3, 2e4, 1e5, 3e5, 1e6, 2e7, 1e8])
def test_size_rule(params):
    n_layer, d, h = shape_for_params(params)
    assert d % (8 * h) == 0
    model = GPT.for_params(params)
    assert model.non_embedding_params() == non_embedding_params(n_layer, d)
    exact = non_embedding_params(n_layer, d)
    # widths come in multiples of 8, coarse below 1e4 parameters; the exact count is what is recorded
    assert abs(exact / params - 1) < (0.5 if params < 1e4 else 0.2)


def test_size_grows_with_request():
    sizes = [non_embedding_params(*shape_for_params(p)[:2]) for p in (1e4, 3e4, 1e5, 3e5, 1e6)]
    assert sizes == sorted(sizes)


def test_forward_shapes_and_causality():
    torch.manual_seed(0)
    model = GPT.for_params(2e4, context=16)
    x = torch.randint(0, 256, (3, 16))
    logits, loss = model(x, x)
    assert logits.shape == (3, 16, 256) and loss.ndim == 0
    x2 = x.clone()
    x2[:, 10:] = (x2[:, 10:] + 1) % 256  # changing the future must not change the past
    logits2, _ = model(x2)
    assert torch.allclose(logits[:, :10], logits2[:, :10], atol=1e-6)


def test_compress_touches_block_linears_only():
    model = GPT.for_params(2e4)
    layers = compress_(model, "w4a4")
    assert len(layers) == 4 * model.cfg.n_layer
    assert all(isinstance(m, CompressedLinear) for m in layers)
    assert not isinstance(model.wte, CompressedLinear)


@pytest.mark.parametrize("fmt", ["dense", "w16", "w16a16"])
def test_dense_is_bit_identical_to_no_compression(fmt):
    def run(compress: bool):
        torch.manual_seed(0)
        model = GPT.for_params(2e4, context=32)
        if compress:
            assert compress_(model, fmt) == []
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        gen = torch.Generator().manual_seed(1)
        for _ in range(5):
            x = torch.randint(0, 256, (4, 32), generator=gen)
            _, loss = model(x, x)
            loss.backward()
            opt.step()
            opt.zero_grad()
        return model.state_dict()

    a, b = run(True), run(False)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_compressed_linear_with_nothing_to_do_is_bit_identical_to_linear():
    from bayes_epm.models import Format

    torch.manual_seed(0)
    linear = torch.nn.Linear(32, 16)
    wrapped = CompressedLinear(linear, Format())  # the layer's own path, not compress_'s early return
    x = torch.randn(4, 7, 32, requires_grad=True)
    y1 = linear(x)
    y2 = wrapped(x)
    assert torch.equal(y1, y2)
    g1 = torch.autograd.grad(y1.sum(), (x, linear.weight))
    g2 = torch.autograd.grad(y2.sum(), (x, wrapped.weight))
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))


def test_dense_leaves_the_model_untouched():
    model = GPT.for_params(2e4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert compress_(model, "dense") == []
    assert not any(isinstance(m, CompressedLinear) for m in model.modules())
    assert not any(m._forward_pre_hooks for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_compressed_model_shares_parameters_with_the_original():
    model = GPT.for_params(2e4)
    before = {id(p) for p in model.parameters()}
    compress_(model, "s0.5-w4")
    assert {id(p) for p in model.parameters()} == before  # optimisers built earlier stay valid
