"""Input validation shared by the pre-processing functions; each failure is a ``ValueError`` that says what to do."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse

if TYPE_CHECKING:
    from anndata import AnnData

_CHUNK_ROWS = 10_000


def check_unique_var_names(adata: AnnData, name: str) -> None:
    """Raise if ``adata.var_names`` has duplicates."""
    if not adata.var_names.is_unique:
        dupes = adata.var_names[adata.var_names.duplicated()].unique()
        raise ValueError(
            f"{name}.var_names has {len(dupes)} duplicated gene names (e.g. {list(dupes[:5])}); "
            f"make them unique first, e.g. {name}.var_names_make_unique()."
        )


def check_obs_key(adata: AnnData, key: str, name: str) -> None:
    """Raise if ``key`` is not a column of ``adata.obs``."""
    if key not in adata.obs.columns:
        raise ValueError(f"{key!r} is not a column of {name}.obs; available: {list(adata.obs.columns)[:20]}.")


def get_matrix(adata: AnnData, layer: str | None, name: str):
    """``adata.X`` or ``adata.layers[layer]``; raise if the layer is missing or the matrix absent."""
    if layer is None:
        if adata.X is None:
            raise ValueError(f"{name}.X is empty; pass layer=... naming the layer with raw counts.")
        return adata.X
    if layer not in adata.layers:
        raise ValueError(f"Layer {layer!r} not found in {name}.layers; available: {list(adata.layers.keys())}.")
    return adata.layers[layer]


def check_counts(matrix, name: str) -> None:
    """Raise unless ``matrix`` (sparse or dense) holds finite, non-negative integer counts.

    Dense input is checked in row chunks so no large temporary array is made.
    """
    if sparse.issparse(matrix):
        chunks = [matrix.data]
    else:
        chunks = (np.asarray(matrix[i : i + _CHUNK_ROWS]) for i in range(0, matrix.shape[0], _CHUNK_ROWS))
    for values in chunks:
        if values.size == 0:
            continue
        if not np.isfinite(values).all():
            raise ValueError(f"{name} contains NaN or infinite values; pass raw counts (layer=...).")
        if (values < 0).any():
            raise ValueError(f"{name} contains negative values; pass raw counts (layer=...), not scaled data.")
        if not np.array_equal(values, np.round(values)):
            raise ValueError(
                f"{name} contains non-integer values; pass raw counts (layer=...), not normalised or log data."
            )
