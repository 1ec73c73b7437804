"""speciesvi: cross-species alignment of single-cell RNA-seq (scSpecies) on scvi-tools."""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import PackageNotFoundError, version

from . import datasets, io, pp

try:
    __version__ = version("speciesvi")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

logger = logging.getLogger(__name__)

__all__ = ["ContextVI", "TargetVI", "datasets", "io", "pl", "pp", "tl"]


def __getattr__(name: str):
    # The models and the analysis functions (tl) import torch and scvi-tools; keep ``import speciesvi.pp`` light.
    if name in {"ContextVI", "TargetVI"}:
        return getattr(importlib.import_module(".model", __name__), name)
    if name in {"pl", "tl", "model"}:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'speciesvi' has no attribute {name!r}")
