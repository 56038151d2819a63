import math

import pytest
import torch

from bayes_epm.models.quantize import QUANTIZERS, Quantizer, gaussian_mse, gaussian_optimal_clip, register_quantizer

# Max (1960), optimal uniform quantizer for N(0, 1): step sizes for 2..256 levels
MAX_STEPS = {1: 1.596, 2: 0.9957, 3: 0.5860, 4: 0.3352, 5: 0.1881, 6: 0.1041, 7: 0.0569, 8: 0.0308}


@pytest.mark.parametrize("bits", range(1, 9))
def test_gaussian_optimal_clip_matches_max_1960(bits):
    step = gaussian_optimal_clip(bits) / 2 ** (bits - 1)
    assert step == pytest.approx(MAX_STEPS[bits], rel=2e-3)


@pytest.mark.parametrize("name", sorted(QUANTIZERS))
@pytest.mark.parametrize("bits", range(1, 9))
def test_at_most_2_to_the_bits_values_per_row(name, bits):
    x = torch.randn(16, 512, generator=torch.Generator().manual_seed(bits))
    q = QUANTIZERS[name].weight(x, bits)
    assert q.shape == x.shape
    counts = [row.unique().numel() for row in q]
    assert max(counts) <= 2**bits
    assert min(counts) >= min(2**bits - 1, 2)  # the grid is used, not collapsed


@pytest.mark.parametrize("name", sorted(QUANTIZERS))
def test_one_bit_is_sign_times_scale(name):
    x = torch.randn(8, 256, generator=torch.Generator().manual_seed(0))
    q = QUANTIZERS[name].weight(x, 1)
    scale = q.abs().amax(dim=1, keepdim=True)
    assert torch.equal(q, torch.sign(x) * scale)


def test_rms_one_bit_scale_is_mean_abs_for_gaussian():
    x = torch.randn(4, 1 << 16, generator=torch.Generator().manual_seed(0))
    q = QUANTIZERS["rms"].weight(x, 1)
    assert q.abs().amax(dim=1) == pytest.approx(torch.full((4,), math.sqrt(2 / math.pi)), rel=1e-2)


@pytest.mark.parametrize("name", sorted(QUANTIZERS))
@pytest.mark.parametrize("bits", [1, 4])
def test_masked_entries_stay_zero_and_scale_uses_survivors(name, bits):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, 64, generator=gen)
    mask = (torch.rand(8, 64, generator=gen) > 0.5).float()
    q = QUANTIZERS[name].weight(x * mask, bits, mask)
    assert torch.all(q[mask == 0] == 0)
    for r in range(8):  # each row's survivors quantize exactly as if the pruned entries never existed
        keep = mask[r] == 1
        alone = QUANTIZERS[name].weight(x[r, keep].unsqueeze(0), bits)[0]
        assert torch.allclose(q[r, keep], alone, rtol=1e-6, atol=0)


def _clip_points(name: str, x: torch.Tensor, bits: int) -> torch.Tensor:
    """Each row's clipping point, from the quantizer's documented definition."""
    if name == "rms":
        return gaussian_optimal_clip(bits) * x.pow(2).mean(1).sqrt()
    amax = x.abs().amax(1)
    return amax * 2 if bits == 1 else amax * (1 + 0.5 / (2 ** (bits - 1) - 1))


@pytest.mark.parametrize("name", sorted(QUANTIZERS))
@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_ste_passes_gradient_exactly_inside_the_clipping_range(name, bits):
    x = torch.randn(8, 128, generator=torch.Generator().manual_seed(2)).requires_grad_()
    upstream = torch.randn(8, 128, generator=torch.Generator().manual_seed(3))
    QUANTIZERS[name].weight(x, bits).backward(upstream)
    clip = _clip_points(name, x.detach(), bits).unsqueeze(1)  # (R, 1)
    inside = x.detach().abs() <= clip
    margin = (x.detach().abs() - clip).abs() > 1e-4 * clip  # ignore ties at the boundary
    assert torch.equal((x.grad != 0)[margin], inside[margin])
    assert torch.equal(x.grad[inside & margin], upstream[inside & margin])  # identity inside the range
    if name == "rms":  # rms clips a few entries (at 8 bits, 3.9 sigma, there may be none in 1024)
        assert int((~inside).sum()) < x.numel() // 4 and (bits == 8 or int((~inside).sum()) > 0)
    else:
        assert bool(inside.all())  # min-max never clips


def test_activation_is_per_token():
    x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(4))
    x[0, 0] *= 100  # one loud token must not change the others' grids
    q = QUANTIZERS["absmax"].activation(x, 4)
    assert q.shape == x.shape
    assert torch.equal(q[1], QUANTIZERS["absmax"].activation(x[1:], 4)[0])


@pytest.mark.parametrize("bits, expected", [(1, 0.3634), (2, 0.1188), (4, 0.01154), (8, 8.77e-5)])
def test_gaussian_mse_of_rms_is_near_the_optimum(bits, expected):
    mse, se = gaussian_mse("rms", bits, n=1 << 18)
    assert se < 0.05 * mse  # the Monte Carlo error is stated and small
    # within Monte Carlo error of Max's optimum (plus 2% for using each row's RMS instead of sigma=1)
    assert abs(mse - expected) < 4 * se + 0.02 * expected


def test_registering_a_quantizer_is_one_class():
    @register_quantizer("test_identity")
    class Identity(Quantizer):
        def quantize_rows(self, x, bits, mask=None):
            return x

    try:
        from bayes_epm.models.formats import Format

        assert Format.parse("w4:test_identity").quantizer == "test_identity"
        with pytest.raises(KeyError):
            register_quantizer("test_identity")(Identity)
    finally:
        del QUANTIZERS["test_identity"]
