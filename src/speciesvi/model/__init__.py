"""User-facing scvi-tools models of speciesvi."""

from ._context import ContextVI
from ._target import TargetVI

__all__ = ["ContextVI", "TargetVI"]
