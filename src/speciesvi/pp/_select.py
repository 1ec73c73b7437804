"""Gene selection for a species pair: each species' most variable genes plus the homologs of the other's."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import sparse

from ._checks import check_counts, check_obs_key, check_unique_var_names, get_matrix
from ._neighbors import homologous_genes

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

#: Gene count above which ``setup_anndata`` suggests :func:`speciesvi.pp.select_genes`.
MANY_GENES = 8000
FLAVOR = "seurat_v3"
#: Genes detected in fewer cells of a species are never among its most variable genes.
MIN_CELLS = 3
#: Fewer genes that vary in a batch crash scanpy's seurat_v3 (its loess fit), so they are refused first.
MIN_VARYING_GENES = 4
_CHUNK_ROWS = 10_000


def _check_batch_key(adata: AnnData, key: str | None, name: str) -> None:
    if key is None:
        return
    check_obs_key(adata, key, name)
    if adata.obs[key].isna().any():
        raise ValueError(f"{name}.obs[{key!r}] has missing values; fill them or drop those cells first.")


def _check_n_top_genes(n_top_genes: int, target: AnnData, context: AnnData) -> None:
    if isinstance(n_top_genes, bool) or not isinstance(n_top_genes, int | np.integer) or n_top_genes < 1:
        raise ValueError(f"n_top_genes must be a positive integer, not {n_top_genes!r}.")
    smallest = min(target.n_vars, context.n_vars)
    if n_top_genes > smallest:
        raise ValueError(
            f"n_top_genes={n_top_genes} exceeds the genes of a species (target {target.n_vars}, context "
            f"{context.n_vars}); pass n_top_genes <= {smallest}."
        )


def _detected(matrix) -> np.ndarray:
    """Number of cells with a positive count, per gene; dense input is read in row chunks."""
    if sparse.issparse(matrix):
        return np.asarray((matrix > 0).sum(axis=0)).ravel()
    counts = np.zeros(matrix.shape[1], dtype=np.int64)
    for start in range(0, matrix.shape[0], _CHUNK_ROWS):
        counts += np.count_nonzero(np.asarray(matrix[start : start + _CHUNK_ROWS]) > 0, axis=0)
    return counts


def _n_varying(block) -> int:
    """Number of genes (columns) whose counts are not all equal in ``block``."""
    if sparse.issparse(block):
        spread = block.max(axis=0).toarray().ravel() - block.min(axis=0).toarray().ravel()
    else:
        spread = np.ptp(np.asarray(block), axis=0)
    return int((spread > 0).sum())


def _check_batches(matrix, batches: pd.Series | None, name: str) -> None:
    """Raise unless every batch has genes that vary: scanpy's seurat_v3 loess crashes the process on <= 3 of them."""
    groups = {None: np.arange(matrix.shape[0])} if batches is None else batches.groupby(batches, observed=True).indices
    for batch, rows in groups.items():
        block = matrix[np.sort(rows)] if len(rows) < matrix.shape[0] else matrix
        if (n_varying := _n_varying(block)) < MIN_VARYING_GENES:
            where, fix = (
                (name, "pass more cells")
                if batch is None
                else (f"batch {batch!r} of {name}", f"merge small batches or pass {name}_batch_key=None")
            )
            raise ValueError(
                f"In {where} ({len(rows)} cells) only {n_varying} of the genes detected in {MIN_CELLS} cells vary; "
                f"scanpy's seurat_v3 cannot rank genes there: {fix}."
            )


def _most_variable(adata: AnnData, n_top_genes: int, batch_key: str | None, layer: str | None, name: str) -> np.ndarray:
    """Boolean mask of the ``n_top_genes`` most variable genes (scanpy ``seurat_v3`` on counts; all if too few).

    Only genes detected in at least ``MIN_CELLS`` cells are ranked: rarer genes are noise, and their tied
    mean-variance points make the loess fit of ``seurat_v3`` fail in small batches.
    """
    if n_top_genes >= adata.n_vars:
        return np.ones(adata.n_vars, dtype=bool)
    candidates = _detected(get_matrix(adata, layer, name)) >= MIN_CELLS
    if n_top_genes >= candidates.sum():
        return candidates
    import scanpy as sc

    subset = adata[:, candidates] if not candidates.all() else adata
    _check_batches(get_matrix(subset, layer, name), subset.obs[batch_key] if batch_key else None, name)
    try:
        table = sc.pp.highly_variable_genes(
            subset, layer=layer, flavor=FLAVOR, n_top_genes=int(n_top_genes), batch_key=batch_key, inplace=False
        )
    except ValueError as error:  # skmisc's loess: too few distinct points in a batch
        raise ValueError(
            f"scanpy's seurat_v3 could not rank the genes of {name} ({error}); this happens with batches of few "
            f"cells: merge small batches or pass {name}_batch_key=None."
        ) from error
    mask = np.zeros(adata.n_vars, dtype=bool)
    mask[np.flatnonzero(candidates)[table["highly_variable"].to_numpy(dtype=bool)]] = True
    return mask


def select_genes(
    target: AnnData,
    context: AnnData,
    n_top_genes: int = 4000,
    target_batch_key: str | None = None,
    context_batch_key: str | None = None,
    inplace: bool = True,
    *,
    target_layer: str | None = None,
    context_layer: str | None = None,
) -> tuple[AnnData, AnnData] | None:
    """Keep each species' most variable genes plus the homologs of the other species' most variable genes.

    Per species, the ``n_top_genes`` most variable genes are selected on raw counts with
    :func:`scanpy.pp.highly_variable_genes` (``flavor="seurat_v3"``, batch-aware when a batch key is given)
    among the genes detected in at least 3 cells (rarer genes are noise, and they make the loess fit of
    ``seurat_v3`` fail in small batches); a species with at most ``n_top_genes`` genes keeps all of them, one
    with at most ``n_top_genes`` genes detected in 3 cells keeps those. Each species then also keeps the homologs
    (``target.var["context_gene"]``) of the other species' most variable genes, so every most variable gene with
    a homolog keeps it on the other side and the homologous gene set stays large. The step belongs between
    :func:`~speciesvi.pp.translate_genes` and :func:`~speciesvi.pp.homolog_neighbors`: models on all genes of
    a species (often 20,000 or more) train slowly and need much memory. Matrices stay sparse.

    Parameters
    ----------
    target
        Target AnnData with raw counts, after :func:`~speciesvi.pp.translate_genes`.
    context
        Context AnnData with raw counts.
    n_top_genes
        Number of most variable genes per species; at most the gene count of each species.
    target_batch_key
        Column of ``target.obs`` with batches (e.g. donors); genes are then ranked across batches.
    context_batch_key
        Column of ``context.obs`` with batches.
    inplace
        Subset both AnnData objects in place and return ``None``; ``False`` returns subset copies and leaves the
        inputs untouched.
    target_layer
        Layer of ``target`` with raw counts; ``None`` uses ``.X``.
    context_layer
        Layer of ``context`` with raw counts; ``None`` uses ``.X``.

    Returns
    -------
    ``None`` with ``inplace=True``; otherwise ``(target_subset, context_subset)``. Both outputs get the
    parameters and the number of genes kept in ``.uns["select_genes_params"]``. On error neither AnnData is
    changed.

    Examples
    --------
    >>> import speciesvi
    >>> mouse, human = speciesvi.datasets.baron_pancreas()
    >>> table = speciesvi.pp.homology_table("human", "mouse")
    >>> speciesvi.pp.translate_genes(human, table, context=mouse)
    >>> speciesvi.pp.select_genes(human, mouse, target_batch_key="donor", context_batch_key="donor")
    >>> params = human.uns["select_genes_params"]
    >>> params["n_target_genes"] == human.n_vars and params["n_context_genes"] == mouse.n_vars
    True

    Or keep the inputs and get the subsets:

    >>> mouse, human = speciesvi.datasets.baron_pancreas()
    >>> speciesvi.pp.translate_genes(human, table, context=mouse)
    >>> human_small, mouse_small = speciesvi.pp.select_genes(human, mouse, n_top_genes=2000, inplace=False)
    >>> human_small.n_vars < human.n_vars
    True
    """
    if "context_gene" not in target.var.columns:
        raise ValueError(
            "target.var has no 'context_gene' column; run speciesvi.pp.translate_genes(target, table, "
            "context=context) first."
        )
    for adata, name in ((target, "target"), (context, "context")):
        if adata.isbacked:
            raise ValueError(f"{name} is backed by a file; load it first: {name} = {name}.to_memory().")
        if adata.n_obs == 0:
            raise ValueError(f"{name} has no cells; pass an AnnData with cells.")
    _check_n_top_genes(n_top_genes, target, context)
    check_unique_var_names(target, "target")
    check_unique_var_names(context, "context")
    _check_batch_key(target, target_batch_key, "target")
    _check_batch_key(context, context_batch_key, "context")
    check_counts(
        get_matrix(target, target_layer, "target"),
        "target" if target_layer is None else f"target.layers[{target_layer!r}]",
    )
    check_counts(
        get_matrix(context, context_layer, "context"),
        "context" if context_layer is None else f"context.layers[{context_layer!r}]",
    )
    t_genes, c_genes = homologous_genes(target, context)  # raises unless the translation is one-to-one
    translated = target.uns.get("translate_genes_params", {})
    if translated.get("restricted_to_context") is False:
        logger.warning(
            "select_genes: translate_genes ran without context=, so genes the homology table misses were not "
            "paired by symbol; run speciesvi.pp.translate_genes(target, table, context=context) for more homologs."
        )

    target_hvg = _most_variable(target, n_top_genes, target_batch_key, target_layer, "target")
    context_hvg = _most_variable(context, n_top_genes, context_batch_key, context_layer, "context")
    t_index = target.var_names.get_indexer(t_genes)
    c_index = context.var_names.get_indexer(c_genes)
    pair_kept = target_hvg[t_index] | context_hvg[c_index]  # a pair is kept when either gene is most variable
    target_mask = target_hvg.copy()
    target_mask[t_index[pair_kept]] = True
    context_mask = context_hvg.copy()
    context_mask[c_index[pair_kept]] = True

    params = {
        "flavor": FLAVOR,
        "n_top_genes": int(n_top_genes),
        "min_cells": MIN_CELLS,
        "target_batch_key": target_batch_key,
        "context_batch_key": context_batch_key,
        "target_layer": target_layer,
        "context_layer": context_layer,
        "n_target_genes": int(target_mask.sum()),
        "n_context_genes": int(context_mask.sum()),
        "n_target_genes_before": int(target.n_vars),
        "n_context_genes_before": int(context.n_vars),
        "n_homologous_pairs": int(pair_kept.sum()),
    }
    logger.info(
        "select_genes: kept %d of %d target and %d of %d context genes (%d most variable per species, %s), "
        "%d homologous pairs",
        params["n_target_genes"],
        target.n_vars,
        params["n_context_genes"],
        context.n_vars,
        n_top_genes,
        FLAVOR,
        params["n_homologous_pairs"],
    )
    if inplace:
        target._inplace_subset_var(target_mask)
        context._inplace_subset_var(context_mask)
        outputs = (target, context)
    else:
        outputs = (target[:, target_mask].copy(), context[:, context_mask].copy())
    for adata in outputs:
        adata.uns["select_genes_params"] = dict(params)
    return None if inplace else outputs
