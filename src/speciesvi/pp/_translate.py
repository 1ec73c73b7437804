"""Translate target gene symbols into context symbols with an explicit policy for non one-to-one homologs."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from ._checks import check_unique_var_names
from ._homology_formats import HOMOLOGY_TYPES

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

TranslationPolicy = Literal["one2one", "best"]
_TYPE_RANK = {t: i for i, t in enumerate(HOMOLOGY_TYPES)}


def _one2one(pairs: pd.DataFrame) -> pd.DataFrame:
    """One-to-one pairs whose two symbols each occur once among the candidate pairs."""
    pairs = pairs[pairs["homology_type"] == "one2one"]
    unique = ~pairs["target_gene"].duplicated(keep=False) & ~pairs["context_gene"].duplicated(keep=False)
    if (n_ambiguous := int((~unique).sum())) > 0:
        logger.info("translate_genes: dropped %d one2one rows whose symbol occurs in several rows", n_ambiguous)
    return pairs[unique]


def _best(pairs: pd.DataFrame) -> pd.DataFrame:
    """Greedy one-to-one matching: best homology type, then highest score, then table order."""
    order = np.lexsort(
        (
            np.arange(len(pairs)),
            -pairs["score"].fillna(-np.inf).to_numpy(),
            pairs["homology_type"].map(_TYPE_RANK).to_numpy(),
        )
    )
    used_t: set[str] = set()
    used_c: set[str] = set()
    keep = []
    targets = pairs["target_gene"].to_numpy()
    contexts = pairs["context_gene"].to_numpy()
    for i in order:
        t, c = targets[i], contexts[i]
        if t not in used_t and c not in used_c:
            used_t.add(t)
            used_c.add(c)
            keep.append(i)
    return pairs.iloc[np.sort(keep)]


def translate_genes(
    adata: AnnData,
    table: pd.DataFrame,
    policy: TranslationPolicy = "one2one",
    context: AnnData | None = None,
) -> None:
    """Record the context-species homolog of every target gene in ``adata.var``.

    Symbols are matched exactly (case-sensitive) against the table. Each target gene gets at most one context
    gene and each context gene is used by at most one target gene, so the homologous genes of the two species
    pair up one-to-one.

    Parameters
    ----------
    adata
        Target AnnData; ``var_names`` are gene symbols of the target species and must be unique.
    table
        Tidy homology table from :func:`~speciesvi.pp.homology_table` (columns ``target_gene``,
        ``context_gene``, ``homology_type`` and optionally ``score``).
    policy
        How to treat genes with several candidate homologs:

        - ``"one2one"`` (default): only ``one2one`` pairs; a one-to-one row whose target or context symbol occurs
          in another candidate row (duplicated symbols) is dropped as ambiguous.
        - ``"best"``: additionally map ``one2many`` and ``many2many`` genes by greedy one-to-one matching over
          the candidate pairs, ordered by homology type (one2one first), then ``score`` (highest first; NaN last),
          then table order. A context gene already taken is never given to a second target gene.

        Candidates are first restricted to the genes of ``adata`` (and of ``context`` when given), so a context
        gene is not spent on a target gene the data does not measure.
    context
        Optional context AnnData: only homologs among ``context.var_names`` are kept, so the translated genes are
        the homologous gene set H shared by both datasets.

    Returns
    -------
    Nothing; sets ``adata.var["context_gene"]`` (context symbol, NaN where there is none),
    ``adata.var["homology_type"]`` and ``adata.uns["translate_genes_params"]``. On error ``adata`` is unchanged.

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> import speciesvi
    >>> adata = ad.AnnData(np.ones((2, 3), dtype=np.float32))
    >>> adata.var_names = ["INS", "GCG", "NOTAGENE"]
    >>> table = speciesvi.pp.homology_table("human", "mouse")
    >>> speciesvi.pp.translate_genes(adata, table)
    >>> adata.var["context_gene"].tolist()
    [nan, 'Gcg', nan]
    >>> speciesvi.pp.translate_genes(adata, table, policy="best")
    >>> adata.var["context_gene"].tolist()
    ['Ins2', 'Gcg', nan]
    """
    if policy not in ("one2one", "best"):
        raise ValueError(f"policy must be 'one2one' or 'best', not {policy!r}.")
    if not isinstance(table, pd.DataFrame) or not {"target_gene", "context_gene", "homology_type"} <= set(
        table.columns
    ):
        raise ValueError(
            "table must be a DataFrame with columns 'target_gene', 'context_gene' and 'homology_type'; build it "
            "with speciesvi.pp.homology_table(...)."
        )
    check_unique_var_names(adata, "adata")
    if context is not None:
        check_unique_var_names(context, "context")

    pairs = pd.DataFrame(
        {
            "target_gene": table["target_gene"].to_numpy(dtype=object),
            "context_gene": table["context_gene"].to_numpy(dtype=object),
            "homology_type": table["homology_type"].to_numpy(dtype=object),
            "score": pd.to_numeric(table["score"], errors="coerce").to_numpy(float)
            if "score" in table.columns
            else np.nan,
        }
    ).dropna(subset=["target_gene", "context_gene", "homology_type"])
    unknown = set(pairs["homology_type"]) - set(HOMOLOGY_TYPES)
    if unknown:
        raise ValueError(f"table has unknown homology types {sorted(unknown)[:5]}; expected {list(HOMOLOGY_TYPES)}.")
    pairs = pairs.drop_duplicates(subset=["target_gene", "context_gene"], keep="first")
    pairs = pairs[pairs["target_gene"].isin(adata.var_names)]
    if context is not None:
        pairs = pairs[pairs["context_gene"].isin(context.var_names)]
    chosen = _one2one(pairs) if policy == "one2one" else _best(pairs)

    mapping = pd.Series(chosen["context_gene"].to_numpy(), index=chosen["target_gene"].to_numpy(), dtype=object)
    types = pd.Series(chosen["homology_type"].to_numpy(), index=chosen["target_gene"].to_numpy(), dtype=object)
    context_gene = mapping.reindex(adata.var_names).to_numpy(dtype=object)
    homology_type = types.reindex(adata.var_names).to_numpy(dtype=object)

    n_mapped = int(pd.notna(context_gene).sum())
    adata.var["context_gene"] = context_gene
    adata.var["homology_type"] = homology_type
    adata.uns["translate_genes_params"] = {
        "policy": policy,
        "source": str(table.attrs.get("source", "DataFrame")),
        "restricted_to_context": context is not None,
        "n_translated": n_mapped,
    }
    counts = chosen["homology_type"].value_counts()
    logger.info(
        "translate_genes(policy=%s): %d of %d target genes (%.1f%%) have a context homolog%s (%s)",
        policy,
        n_mapped,
        adata.n_vars,
        100.0 * n_mapped / max(adata.n_vars, 1),
        " in the context data" if context is not None else "",
        ", ".join(f"{counts.get(t, 0)} {t}" for t in HOMOLOGY_TYPES),
    )
