"""The torch transformer and its compression (installed as ``bayes_epm.models``).

Knows nothing of Ray, the study store or PyMC.
"""

from bayes_epm.models.compress import CompressedLinear, compress_, sparsity_schedule
from bayes_epm.models.formats import Format, parse_format
from bayes_epm.models.quantize import QUANTIZERS, Quantizer, register_quantizer
from bayes_epm.models.sparsity import PATTERNS, SparsityPattern, SparsitySchedule, register_pattern
from bayes_epm.models.transformer import GPT, GPTConfig, non_embedding_params, shape_for_params

__all__ = [
    "CompressedLinear", "Format", "GPT", "GPTConfig", "PATTERNS", "QUANTIZERS", "Quantizer",
    "SparsityPattern", "SparsitySchedule", "compress_", "non_embedding_params", "parse_format",
    "register_pattern", "register_quantizer", "shape_for_params", "sparsity_schedule",
]
