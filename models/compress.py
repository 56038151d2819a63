"""Apply a compression format to a model: ``compress_(model, fmt)``.

Every ``nn.Linear`` in the model is compressed (the transformer in :mod:`.transformer` keeps its
embedding and output head out of ``nn.Linear`` on purpose, so "every linear layer" means every
linear layer inside the blocks). Each one is swapped for a :class:`CompressedLinear` that shares
its parameters, so an optimiser may be built before or after. Sparse and quantized: the mask is
applied first, then the survivors are quantized (the scale is computed from the survivors alone).

``dense`` changes nothing: the model stays bit-identical to an uncompressed one.
"""

from __future__ import annotations

from torch import nn
from torch.nn import functional as F

from bayes_epm.models.formats import FULL_BITS, Format
from bayes_epm.models.quantize import PUBLISHED_QUANTIZERS, QUANTIZERS, callable_origin
from bayes_epm.errors import CompressionError
from bayes_epm.models.sparsity import PATTERNS, SparsitySchedule, attach_masks, pattern_family, sparsity_handler


class CompressedLinear(nn.Linear):
    """A linear layer with masked and/or fake-quantized weights and fake-quantized inputs."""

    def __init__(self, linear: nn.Linear, fmt: Format) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight  # the same Parameter objects: optimisers stay valid
        self.bias = linear.bias
        self.fmt = fmt
        self.quantizer = QUANTIZERS[fmt.quantizer]
        if fmt.is_sparse:
            attach_masks(self, fmt.pattern)  # weight := weight_orig * weight_mask (torch.prune hook)

    def forward(self, x):  # x (..., in) -> (..., out)
        w = self.weight  # (out, in), already masked by the pruning hook when sparse
        if self.fmt.w_bits < FULL_BITS:
            w = self.quantizer.weight(w, self.fmt.w_bits, getattr(self, "weight_mask", None))
        if self.fmt.a_bits < FULL_BITS:
            x = self.quantizer.activation(x, self.fmt.a_bits)
        return F.linear(x, w, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, format={self.fmt.name}"


def compress_(model: nn.Module, fmt: Format | str) -> list[CompressedLinear]:
    """Compress every ``nn.Linear`` of ``model`` in place; returns the compressed layers."""
    fmt = Format.parse(fmt)
    if fmt.is_dense:
        return []
    if fmt.is_quantized and fmt.quantizer in PUBLISHED_QUANTIZERS:
        raise CompressionError(f"quantizer {fmt.quantizer!r} is known from published runs only "
                               f"({PUBLISHED_QUANTIZERS[fmt.quantizer][0]}); trainable quantizers: "
                               f"{', '.join(sorted(QUANTIZERS))}")
    if fmt.is_quantized and fmt.quantizer not in QUANTIZERS:
        raise CompressionError(f"quantizer {fmt.quantizer!r} came from a prior file whose callable "
                               f"({callable_origin(fmt.quantizer) or 'none given'}) is not importable here, so it "
                               f"cannot be trained; trainable quantizers: {', '.join(sorted(QUANTIZERS))}")
    targets = [(parent, name, child) for parent in model.modules()
               for name, child in parent.named_children() if type(child) is nn.Linear]
    if fmt.is_sparse:  # check every layer before touching any, so a failure leaves the model as it was
        sparsity_handler(fmt.pattern, fmt.sparsifier)  # a sparsifier that cannot be trained here: say so now
        handler = PATTERNS[pattern_family(fmt.pattern)]
        reasons = {name: r for _, name, child in targets
                   if (r := handler.check(child.weight.shape, fmt.pattern)) is not None}
        if reasons:
            raise CompressionError(f"cannot apply {fmt.name}: " + "; ".join(sorted(set(reasons.values()))))
    layers = []
    for parent, name, child in targets:
        layer = CompressedLinear(child, fmt)
        setattr(parent, name, layer)
        layers.append(layer)
    return layers


def sparsity_schedule(layers: list[CompressedLinear], fmt: Format, total_steps: int,
                      interval: int | None = None) -> SparsitySchedule | None:
    """The pruning schedule of ``layers`` for a run of ``total_steps``, or None if ``fmt`` is not sparse."""
    if not fmt.is_sparse:
        return None
    return SparsitySchedule(layers, fmt.sparsity, fmt.pattern, total_steps, interval, fmt.sparsifier)
