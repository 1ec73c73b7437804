"""Checks of user input that run before anything touches the AnnData."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    from anndata import AnnData

_CHUNK_ROWS = 10_000


def count_matrix(adata: AnnData, layer: str | None):
    """Return ``adata.X`` or ``adata.layers[layer]``, with a clear error if the layer is missing."""
    if layer is None:
        if adata.X is None:
            raise ValueError("adata.X is empty; pass layer= naming the layer that holds the raw counts.")
        return adata.X
    if layer not in adata.layers:
        raise ValueError(f"Layer {layer!r} not found in adata.layers (available: {list(adata.layers)}).")
    return adata.layers[layer]


def _check_values(values: np.ndarray, where: str) -> None:
    if values.size == 0:
        return
    if np.isnan(values).any():
        raise ValueError(f"{where} contains NaN values; pass raw counts (non-negative integers).")
    if (values < 0).any():
        raise ValueError(f"{where} contains negative values; pass raw counts, not scaled or log data.")
    if not np.array_equal(values, np.round(values)):
        raise ValueError(
            f"{where} contains non-integer values; pass raw counts (e.g. layer='counts'), not normalised data."
        )


def check_counts(adata: AnnData, layer: str | None = None) -> None:
    """Raise a ``ValueError`` unless the counts are non-negative integers without NaN (never densifies)."""
    matrix = count_matrix(adata, layer)
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    if sp.issparse(matrix):
        _check_values(np.asarray(matrix.data), where)
        return
    for start in range(0, matrix.shape[0], _CHUNK_ROWS):
        _check_values(np.asarray(matrix[start : start + _CHUNK_ROWS]), where)


def check_obs_key(adata: AnnData, key: str | None, what: str) -> None:
    """Raise a ``ValueError`` if ``key`` is given but absent from ``adata.obs``."""
    if key is not None and key not in adata.obs:
        raise ValueError(f"{what} {key!r} not found in adata.obs (columns: {list(adata.obs.columns)}).")
    if key is not None and adata.obs[key].isna().any():
        raise ValueError(f"{what} {key!r} has missing values; fill or drop those cells first.")


def check_anndata(adata: AnnData, layer: str | None, batch_key: str | None, labels_key: str | None) -> None:
    """All checks ``setup_anndata`` runs before registering anything."""
    from anndata import AnnData

    if not isinstance(adata, AnnData):
        raise TypeError(f"Expected an AnnData object, got {type(adata).__name__}.")
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(f"The AnnData is empty ({adata.n_obs} cells x {adata.n_vars} genes).")
    if not adata.var_names.is_unique:
        raise ValueError("adata.var_names are not unique; call adata.var_names_make_unique() first.")
    check_obs_key(adata, batch_key, "batch_key")
    check_obs_key(adata, labels_key, "labels_key")
    check_counts(adata, layer)
