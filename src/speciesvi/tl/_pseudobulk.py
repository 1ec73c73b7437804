"""Pseudo-bulk log2 fold changes of homologous genes, to validate the model's against the data."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.stats import spearmanr

from ..pp._homologs import homologous_gene_positions

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

PSEUDOBULK_COLUMNS = (
    "cell_type",
    "gene_target",
    "gene_context",
    "lfc",
    "expression_target",
    "expression_context",
    "n_cells_target",
    "n_cells_context",
)


def _gene_pairs(target: AnnData, context: AnnData, gene_pairs: pd.DataFrame | None) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the paired genes in the target and context AnnData, pair by pair."""
    for which, adata in (("target", target), ("context", context)):
        if not adata.var_names.is_unique:
            duplicated = adata.var_names[adata.var_names.duplicated()].unique()
            raise ValueError(
                f"The {which} AnnData has duplicated gene names (e.g. {list(duplicated[:5])}); gene pairs would be "
                f"ambiguous. Make them unique first, e.g. {which}.var_names_make_unique()."
            )
    if gene_pairs is None:
        if "context_gene" not in target.var:
            raise ValueError(
                "The target AnnData has no var['context_gene']; run speciesvi.pp.translate_genes first or pass "
                "gene_pairs= (a DataFrame with columns 'gene_target' and 'gene_context')."
            )
        target_idx, context_idx = homologous_gene_positions(target.var, context.var_names)
        target_names = target.var_names[target_idx].to_numpy()
        context_names = context.var_names[context_idx].to_numpy()
    else:
        if not isinstance(gene_pairs, pd.DataFrame) or not {"gene_target", "gene_context"} <= set(gene_pairs):
            raise TypeError("gene_pairs must be a DataFrame with the columns 'gene_target' and 'gene_context'.")
        pairs = gene_pairs[["gene_target", "gene_context"]].astype(str).drop_duplicates()
        target_names, context_names = pairs["gene_target"].to_numpy(), pairs["gene_context"].to_numpy()
    target_idx = target.var_names.get_indexer(target_names)
    context_idx = context.var_names.get_indexer(context_names)
    missing = (target_idx < 0) | (context_idx < 0)
    if missing.any():
        raise ValueError(
            f"{int(missing.sum())} gene pairs name genes missing from the AnnData objects, e.g. "
            f"{target_names[missing][0]!r} / {context_names[missing][0]!r}."
        )
    if target_idx.size == 0:
        raise ValueError("No homologous gene pairs between the two AnnData objects.")
    return target_idx, context_idx


def _labels(adata: AnnData, key: str, which: str) -> np.ndarray:
    if not isinstance(key, str):
        raise TypeError(f"The {which} labels key must be a string, got {type(key).__name__}.")
    if key not in adata.obs:
        raise ValueError(f"The {which} AnnData has no obs column {key!r}; available: {list(adata.obs.columns)}.")
    column = adata.obs[key]
    labels = column.astype(str).to_numpy(dtype=object)
    labels[column.isna().to_numpy()] = None
    return labels


def _mean_profile(adata: AnnData, layer: str | None, rows: np.ndarray, genes: np.ndarray) -> np.ndarray:
    """Mean over ``rows`` of library-normalised counts of ``genes``, renormalised to sum to 1 over them."""
    if layer is not None and layer not in adata.layers:
        raise ValueError(f"The AnnData has no layer {layer!r}; available: {list(adata.layers)}.")
    matrix = adata.layers[layer] if layer is not None else adata.X
    subset = sparse.csr_matrix(matrix[rows]) if sparse.issparse(matrix) else sparse.csr_matrix(np.asarray(matrix[rows]))
    library = np.asarray(subset.sum(axis=1)).ravel()
    keep = library > 0
    if not keep.any():
        return np.full(genes.size, np.nan)
    normalised = sparse.diags(1.0 / library[keep]) @ subset[keep][:, genes]
    profile = np.asarray(normalised.mean(axis=0)).ravel()
    total = profile.sum()
    return profile / total if total > 0 else np.full(genes.size, np.nan)


def pseudobulk_lfc(
    target: AnnData,
    context: AnnData,
    labels_key: str,
    context_labels_key: str | None = None,
    gene_pairs: pd.DataFrame | None = None,
    cell_types: str | Sequence[str] | None = None,
    layer: str | None = None,
    context_layer: str | None = None,
    eps: float = 1e-6,
) -> pd.DataFrame:
    """Log2 fold changes of homologous genes between two species' data, per cell type (pseudo-bulk).

    For each cell type and species: the counts of every cell divided by its total count (over all its
    genes), averaged over the cells of the type, restricted to the homologous genes and renormalised to
    sum to 1 over them. ``lfc = log2(target + eps) - log2(context + eps)``, the data-level counterpart of
    :meth:`speciesvi.TargetVI.homolog_lfc`. The count matrices are read one cell type at a time and stay
    sparse.

    Parameters
    ----------
    target, context
        AnnData objects with raw counts of the two species.
    labels_key
        Target ``obs`` column with the cell types (e.g. known labels, or transferred ones).
    context_labels_key
        Context ``obs`` column; defaults to ``labels_key``.
    gene_pairs
        DataFrame with columns ``gene_target`` and ``gene_context`` (a :meth:`~speciesvi.TargetVI.homolog_lfc`
        result serves); defaults to ``target.var["context_gene"]`` (:func:`speciesvi.pp.translate_genes`)
        among the context genes.
    cell_types
        Cell types to compare; defaults to all types with cells in both species.
    layer, context_layer
        Layers with the counts (default ``.X``).
    eps
        Pseudo-expression added before the logs (positive).

    Returns
    -------
    pandas.DataFrame
        One row per cell type and gene pair: ``cell_type``, ``gene_target``, ``gene_context``, ``lfc``,
        ``expression_target``, ``expression_context`` (renormalised mean expression), ``n_cells_target``,
        ``n_cells_context``.

    Examples
    --------
    >>> bulk = speciesvi.tl.pseudobulk_lfc(human, mouse, labels_key="cell_ontology_class")
    >>> bulk[bulk["cell_type"] == "type B pancreatic cell"].nlargest(5, "lfc")
    """
    if not isinstance(eps, int | float | np.floating) or not eps > 0:
        raise ValueError(f"eps must be a positive number, got {eps!r}.")
    context_labels_key = labels_key if context_labels_key is None else context_labels_key
    target_labels = _labels(target, labels_key, "target")
    context_labels = _labels(context, context_labels_key, "context")
    target_idx, context_idx = _gene_pairs(target, context, gene_pairs)
    in_both = sorted(set(target_labels[pd.notna(target_labels)]) & set(context_labels[pd.notna(context_labels)]))
    if cell_types is None:
        types = in_both
    else:
        types = [cell_types] if isinstance(cell_types, str) else list(cell_types)
        missing = [t for t in types if t not in in_both]
        if missing:
            raise ValueError(f"Cell types {missing} do not have cells in both species.")
    if not types:
        raise ValueError("No cell type has cells in both species.")
    frames = []
    for cell_type in types:
        rows_t, rows_c = np.flatnonzero(target_labels == cell_type), np.flatnonzero(context_labels == cell_type)
        expr_t = _mean_profile(target, layer, rows_t, target_idx)
        expr_c = _mean_profile(context, context_layer, rows_c, context_idx)
        frames.append(
            pd.DataFrame(
                {
                    "cell_type": cell_type,
                    "gene_target": target.var_names[target_idx].to_numpy(),
                    "gene_context": context.var_names[context_idx].to_numpy(),
                    "lfc": np.log2(expr_t + eps) - np.log2(expr_c + eps),
                    "expression_target": expr_t,
                    "expression_context": expr_c,
                    "n_cells_target": rows_t.size,
                    "n_cells_context": rows_c.size,
                }
            )
        )
    result = pd.concat(frames, ignore_index=True)[list(PSEUDOBULK_COLUMNS)]
    result["cell_type"] = pd.Categorical(result["cell_type"], categories=types)
    return result


def merge_with_pseudobulk(lfc: pd.DataFrame, pseudobulk: pd.DataFrame, min_expression: float = 1e-4) -> pd.DataFrame:
    """Model and pseudo-bulk fold changes of the same (cell type, gene pair), side by side.

    Parameters
    ----------
    lfc
        Model fold changes: columns ``cell_type``, ``gene_target``, ``gene_context`` and ``lfc``.
    pseudobulk
        Result of :func:`pseudobulk_lfc` (the same keys and ``lfc``).
    min_expression
        A pair is ``expressed`` when its pseudo-bulk expression exceeds this in either species (all pairs are
        when ``pseudobulk`` has no expression columns).

    Returns
    -------
    pandas.DataFrame
        The inner join on the keys, with ``lfc_model``, ``lfc_pseudobulk`` and a boolean ``expressed``.
    """
    needed = {"cell_type", "gene_target", "gene_context", "lfc"}
    for name, frame in (("lfc", lfc), ("pseudobulk", pseudobulk)):
        if not isinstance(frame, pd.DataFrame) or not needed <= set(frame.columns):
            raise TypeError(f"{name} must be a DataFrame with the columns {sorted(needed)}.")
    keys = ["cell_type", "gene_target", "gene_context"]
    left = lfc[keys + ["lfc"]].astype({"cell_type": str})
    right = pseudobulk.astype({"cell_type": str})
    merged = left.merge(right, on=keys, suffixes=("_model", "_pseudobulk"))
    if {"expression_target", "expression_context"} <= set(merged.columns):
        merged["expressed"] = (merged["expression_target"] > min_expression) | (
            merged["expression_context"] > min_expression
        )
    else:
        merged["expressed"] = True
    return merged


def lfc_agreement(
    lfc: pd.DataFrame,
    pseudobulk: pd.DataFrame,
    min_expression: float = 1e-4,
    min_cells: int = 20,
) -> pd.DataFrame:
    """Spearman correlation between model and pseudo-bulk log2 fold changes, per cell type.

    Genes count when their pseudo-bulk expression (renormalised over the homologous genes) exceeds
    ``min_expression`` in either species; cell types count with at least ``min_cells`` cells in both.

    Parameters
    ----------
    lfc
        Model fold changes: columns ``cell_type``, ``gene_target``, ``gene_context`` and ``lfc`` (as from
        :meth:`speciesvi.TargetVI.homolog_lfc`, or any other method's).
    pseudobulk
        Result of :func:`pseudobulk_lfc` on the same gene pairs.
    min_expression
        Expression threshold for a gene to count.
    min_cells
        Smallest number of cells of a type in each species.

    Returns
    -------
    pandas.DataFrame
        Indexed by cell type: ``spearman``, ``n_genes``, ``n_cells_target``, ``n_cells_context``.

    Examples
    --------
    >>> table = target.homolog_lfc(labels_key="cell_ontology_class")
    >>> bulk = speciesvi.tl.pseudobulk_lfc(human, mouse, "cell_ontology_class", gene_pairs=table)
    >>> speciesvi.tl.lfc_agreement(table, bulk)["spearman"].median()
    """
    merged = merge_with_pseudobulk(lfc, pseudobulk, min_expression)
    rows = {}
    for cell_type, group in merged.groupby("cell_type", sort=True):
        n_t, n_c = int(group["n_cells_target"].iloc[0]), int(group["n_cells_context"].iloc[0])
        if n_t < min_cells or n_c < min_cells:
            continue
        sub = group[group["expressed"].to_numpy()]
        rho = spearmanr(sub["lfc_model"], sub["lfc_pseudobulk"])[0] if len(sub) > 2 else np.nan
        rows[cell_type] = {"spearman": float(rho), "n_genes": len(sub), "n_cells_target": n_t, "n_cells_context": n_c}
    return pd.DataFrame.from_dict(
        rows, orient="index", columns=["spearman", "n_genes", "n_cells_target", "n_cells_context"]
    ).rename_axis("cell_type")
