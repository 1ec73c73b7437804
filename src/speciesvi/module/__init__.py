"""Torch modules of speciesvi (no AnnData here)."""

from ._components import MLP, ExpressionDecoder, InnerEncoder, LibraryEncoder
from ._context import INTER_KEY, ContextVAE
from ._target import AGREEMENT_KEY, ALIGNMENT_KEY, NEIGHBORS_KEY, TargetVAE

__all__ = [
    "AGREEMENT_KEY",
    "ALIGNMENT_KEY",
    "INTER_KEY",
    "MLP",
    "NEIGHBORS_KEY",
    "ContextVAE",
    "ExpressionDecoder",
    "InnerEncoder",
    "LibraryEncoder",
    "TargetVAE",
]
