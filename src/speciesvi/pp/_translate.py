"""Translate target gene symbols into context symbols with an explicit policy for non one-to-one homologs."""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from ._checks import check_unique_var_names
from ._homology_formats import HOMOLOGY_TYPES

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

TranslationPolicy = Literal["one2one", "best"]
SYMBOL_MATCH = "symbol"
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


def _symbol_pairs(unmapped_targets: pd.Index, free_contexts: pd.Index) -> pd.DataFrame:
    """Target and context genes whose symbols are equal when case is ignored, where the match is unique."""
    target_key = pd.Series(unmapped_targets, index=unmapped_targets.str.upper())
    context_key = pd.Series(free_contexts, index=free_contexts.str.upper())
    target_key = target_key[~target_key.index.duplicated(keep=False)]
    context_key = context_key[~context_key.index.duplicated(keep=False)]
    shared = target_key.index.intersection(context_key.index)
    return pd.DataFrame(
        {
            "target_gene": target_key[shared].to_numpy(dtype=object),
            "context_gene": context_key[shared].to_numpy(dtype=object),
            "homology_type": SYMBOL_MATCH,
            "score": np.nan,
        }
    )


def translate_genes(
    adata: AnnData,
    table: pd.DataFrame,
    policy: TranslationPolicy = "one2one",
    context: AnnData | None = None,
    *,
    match_symbols: bool = True,
) -> None:
    """Record the context-species homolog of every target gene in ``adata.var``.

    Symbols are matched exactly (case-sensitive) against the table; with ``context``, genes the table misses are
    then paired by symbol, ignoring case (``match_symbols``). Each target gene gets at most one context
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
        The context AnnData (recommended): only homologs among ``context.var_names`` are kept, so the translated
        genes are the homologous gene set H shared by both datasets, and genes the table misses are paired by
        symbol (``match_symbols``). Without it, a ``UserWarning`` says that symbol matches were skipped (unless
        ``match_symbols=False`` asks for the table alone).
    match_symbols
        With ``context``: also pair a target gene the table leaves without a homolog with the context gene of the
        same symbol, ignoring case (``PPY`` and ``Ppy``), when that context gene is absent from the table and the
        match is unique. Such pairs get ``homology_type`` ``"symbol"``. Homology tables miss genes that datasets
        measure: they follow a newer genome annotation than many datasets (Baron et al. 2016 still write
        ``GNB2L1`` and ``SEP15``) and lack some orthologs (the bundled Ensembl table has no ``PPY``). The rule is
        checked on the table itself: of the 15,812 human genes of the bundled table whose symbol, ignoring case,
        is a mouse gene of the table, 99.7 % are paired with exactly that gene. ``False`` uses the table only
        (and, without ``context``, silences the warning that symbol matches were skipped).

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
    >>> speciesvi.pp.translate_genes(adata, table, match_symbols=False)  # the table alone, no context data
    >>> adata.var["context_gene"].tolist()
    [nan, 'Gcg', nan]
    >>> speciesvi.pp.translate_genes(adata, table, policy="best", match_symbols=False)
    >>> adata.var["context_gene"].tolist()
    ['Ins2', 'Gcg', nan]

    With the context data, genes the table misses are paired by symbol:

    >>> human = ad.AnnData(np.ones((2, 2), dtype=np.float32))
    >>> human.var_names = ["GCG", "PPY"]
    >>> mouse = ad.AnnData(np.ones((2, 2), dtype=np.float32))
    >>> mouse.var_names = ["Gcg", "Ppy"]
    >>> speciesvi.pp.translate_genes(human, table, context=mouse)
    >>> human.var[["context_gene", "homology_type"]].values.tolist()
    [['Gcg', 'one2one'], ['Ppy', 'symbol']]
    """
    if not isinstance(match_symbols, bool):
        raise TypeError(f"match_symbols must be True or False, not {match_symbols!r}.")
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
    listed_contexts = pd.Index(pairs["context_gene"].unique())
    pairs = pairs[pairs["target_gene"].isin(adata.var_names)]
    if context is not None:
        pairs = pairs[pairs["context_gene"].isin(context.var_names)]
    chosen = _one2one(pairs) if policy == "one2one" else _best(pairs)
    if match_symbols and context is not None:
        unmapped = adata.var_names.difference(pd.Index(chosen["target_gene"]), sort=False)
        free = context.var_names.difference(listed_contexts, sort=False)
        by_symbol = _symbol_pairs(unmapped, free)
        if len(by_symbol):
            chosen = pd.concat([chosen, by_symbol], ignore_index=True)
    elif match_symbols:
        warnings.warn(
            "translate_genes without context=: symbol matches (e.g. PPY/Ppy) were skipped, so genes the homology "
            "table misses stay without a homolog. Pass the context AnnData, "
            "speciesvi.pp.translate_genes(target, table, context=context).",
            UserWarning,
            stacklevel=2,
        )

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
        "match_symbols": bool(match_symbols and context is not None),
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
        ", ".join(f"{counts.get(t, 0)} {t}" for t in (*HOMOLOGY_TYPES, SYMBOL_MATCH)),
    )
