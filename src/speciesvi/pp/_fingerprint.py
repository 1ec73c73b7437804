"""A small, order-sensitive fingerprint of an AnnData, to check later that the same data is used."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anndata import AnnData


def _sha1(names: Iterable[str]) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    for name in names:
        digest.update(str(name).encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


def adata_fingerprint(adata: AnnData, genes: Iterable[str] | None = None) -> dict[str, int | str]:
    """Fingerprint of an AnnData's cells and genes.

    Two AnnData objects with the same cells in the same order and the same genes give the same fingerprint; the
    expression values are not hashed. :func:`~speciesvi.pp.homolog_neighbors` stores the context's fingerprint in
    its parameters so that models can refuse a context whose cells (the rows the neighbour indices point to)
    differ.

    Parameters
    ----------
    adata
        AnnData to fingerprint.
    genes
        Gene names to hash, in order (e.g. the genes used for a computation); default ``adata.var_names``.

    Returns
    -------
    ``{"n_obs": int, "obs_names_sha1": str, "n_genes": int, "genes_sha1": str}``.

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> import speciesvi
    >>> adata = ad.AnnData(np.zeros((3, 2), dtype=np.float32))
    >>> fp = speciesvi.pp.adata_fingerprint(adata)
    >>> fp["n_obs"], fp["n_genes"]
    (3, 2)
    >>> fp == speciesvi.pp.adata_fingerprint(adata.copy())
    True
    >>> fp == speciesvi.pp.adata_fingerprint(adata[::-1])
    False
    """
    gene_list = [str(g) for g in (adata.var_names if genes is None else genes)]
    return {
        "n_obs": int(adata.n_obs),
        "obs_names_sha1": _sha1(adata.obs_names),
        "n_genes": len(gene_list),
        "genes_sha1": _sha1(gene_list),
    }
