"""Highly variable homologous genes, selected with species as the batch, on private copies of the counts."""

from __future__ import annotations

import logging
import warnings

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

logger = logging.getLogger(__name__)


def _species_hvg(counts: sparse.csr_matrix, genes: np.ndarray, n_top_genes: int) -> pd.DataFrame:
    """Seurat-flavour HVG statistics of one species; ``counts`` is copied, never modified."""
    import scanpy as sc

    tmp = ad.AnnData(sparse.csr_matrix(counts, dtype=np.float32, copy=True))
    tmp.var_names = pd.Index(genes.astype(str))
    sc.pp.normalize_total(tmp, target_sum=1e4)
    sc.pp.log1p(tmp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        stats = sc.pp.highly_variable_genes(tmp, n_top_genes=n_top_genes, flavor="seurat", inplace=False)
    return stats[["highly_variable", "dispersions_norm"]].set_index(tmp.var_names)


def select_variable_genes(
    target_counts: sparse.csr_matrix, context_counts: sparse.csr_matrix, n_top_genes: int
) -> np.ndarray:
    """Indices (sorted) of the ``n_top_genes`` homologous genes most variable across both species.

    Both matrices hold counts of the same homologous genes in the same column order. Each species is normalised
    to 10,000 counts per cell and log1p-transformed separately, and Seurat's dispersion-based HVG statistics are
    computed per species. Genes are then ranked as :func:`scanpy.pp.highly_variable_genes` ranks them with
    ``batch_key`` = species: first by the number of species in which they are highly variable, then by their
    normalised dispersion averaged over the species.
    """
    n_genes = target_counts.shape[1]
    if n_top_genes >= n_genes:
        return np.arange(n_genes)
    genes = np.arange(n_genes).astype(str)
    per_species = [_species_hvg(m, genes, n_top_genes) for m in (target_counts, context_counts)]
    n_species = sum(s["highly_variable"].to_numpy(dtype=int) for s in per_species)
    dispersion = pd.concat([s["dispersions_norm"] for s in per_species], axis=1).mean(axis=1, skipna=True)
    dispersion = dispersion.fillna(-np.inf).to_numpy()
    chosen = np.lexsort((np.arange(n_genes), -dispersion, -n_species))[:n_top_genes]
    logger.info(
        "homolog_neighbors: %d highly variable homologous genes (%d variable in both species)",
        n_top_genes,
        int((n_species[chosen] == 2).sum()),
    )
    return np.sort(chosen)
