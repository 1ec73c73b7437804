"""User-facing scvi-tools models of speciesvi."""

from ._adopt import context_from_scvi
from ._arches import pad_query_genes
from ._context import ContextVI
from ._hub import to_hub_model
from ._pretrained import archive_model, default_cache_dir, fetch_model
from ._target import TargetVI

__all__ = [
    "ContextVI",
    "TargetVI",
    "archive_model",
    "context_from_scvi",
    "default_cache_dir",
    "fetch_model",
    "pad_query_genes",
    "to_hub_model",
]
