"""The homologous gene pairs of a target and a context gene list: one lookup that every step shares."""

from __future__ import annotations

import numpy as np
import pandas as pd


def homologous_gene_positions(target_var: pd.DataFrame, context_var_names: pd.Index) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the homologous genes in the target and, pair by pair, in the context gene list.

    A target gene is homologous when its ``var["context_gene"]`` (written by
    :func:`speciesvi.pp.translate_genes`) is one of ``context_var_names``.

    Parameters
    ----------
    target_var
        The target AnnData's ``var``.
    context_var_names
        The context genes (``context.var_names``, or the gene names a model was trained on).

    Returns
    -------
    target_idx, context_idx
        int64 positions, in target gene order; ``context_var_names[context_idx[i]]`` is the homolog of target
        gene ``target_idx[i]``.

    Examples
    --------
    >>> var = pd.DataFrame({"context_gene": ["Ins1", None, "Gcg"]}, index=["INS1", "XIST", "GCG"])
    >>> homologous_gene_positions(var, pd.Index(["Gcg", "Ins1"]))
    (array([0, 2]), array([1, 0]))
    """
    if "context_gene" not in target_var.columns:
        raise ValueError(
            "The target AnnData has no 'context_gene' column in var; run speciesvi.pp.translate_genes(target, table, "
            "context=context) first."
        )
    context_var_names = pd.Index(context_var_names)
    context_gene = target_var["context_gene"].astype(object)
    known = context_gene.notna().to_numpy() & context_gene.isin(context_var_names).to_numpy()
    target_idx = np.flatnonzero(known).astype(np.int64)
    context_idx = context_var_names.get_indexer(context_gene.to_numpy()[known]).astype(np.int64)
    return target_idx, context_idx
