"""dilated-attention: exact dilated attention (LongNet) with a C++/CUDA core.

    from dilated_attention.functional import dilated_attention
    from dilated_attention import DilatedAttention, MultiheadDilatedAttention, LongNetLM
"""

try:  # torch first: it loads the CUDA runtime that a CUDA build of _C links against
    import torch as _torch
except ImportError:
    _torch = None

from . import _C
from .functional import dilated_attention, dilated_attention_with_lse, hilbert_order

__version__ = "0.1.0"


def backends():
    """The compiled-in backends: name, device, description and why one is unavailable here."""
    return _C.backends()


__all__ = ["dilated_attention", "dilated_attention_with_lse", "hilbert_order", "backends",
           "__version__"]

if _torch is not None:
    from . import _torch_ops  # registers the custom ops
    from .modules import (BlockSparseDilatedAttention, BlockSparseMultiheadDilatedAttention,
                          DilatedAttention, MultiheadDilatedAttention)
    from .transformer import DilatedTransformerDecoderLayer, DilatedTransformerEncoderLayer
    from .long_net import LongNet, LongNetLM

    __all__ += [
        "BlockSparseDilatedAttention",
        "BlockSparseMultiheadDilatedAttention",
        "DilatedAttention",
        "MultiheadDilatedAttention",
        "DilatedTransformerEncoderLayer",
        "DilatedTransformerDecoderLayer",
        "LongNet",
        "LongNetLM",
    ]
