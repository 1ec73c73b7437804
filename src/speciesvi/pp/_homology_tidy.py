"""The tidy homology table every source is turned into, and the helpers the format parsers share.

The tidy table has one row per (target gene, context gene) pair and the columns

``target_gene``
    symbol in the target species,
``context_gene``
    symbol in the context species,
``homology_type``
    ``"one2one"``, ``"one2many"`` or ``"many2many"``; as in Ensembl, ``"one2many"`` does not say which side has
    the many genes,
``score``
    a conservation / support score where the source has one (higher is better), else NaN.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

TIDY_COLUMNS = ("target_gene", "context_gene", "homology_type", "score")
HOMOLOGY_TYPES = ("one2one", "one2many", "many2many")

_MISSING_SYMBOLS = {"", "-", "nan", "none", "na", "n/a"}


def norm_column(column: object) -> str:
    """Lower-case a column name and collapse punctuation, so ``human.gene.name`` == ``Human gene name``."""
    return re.sub(r"[^0-9a-z]+", " ", str(column).lower()).strip()


def clean_symbols(values: pd.Series) -> pd.Series:
    """Symbols as stripped strings; empty or placeholder entries become NaN. Case is never changed."""
    out = values.astype("string").str.strip()
    out = out.mask(out.str.lower().isin(_MISSING_SYMBOLS))
    return out.astype(object).where(out.notna(), np.nan)


def types_from_degrees(target_genes: pd.Series, context_genes: pd.Series) -> np.ndarray:
    """Homology type of each pair from how many partners its two genes have in the table.

    A pair is ``one2one`` when both genes have a single partner, ``many2many`` when both have several and
    ``one2many`` otherwise. On complete bipartite homology groups (MGI classes, Ensembl gene trees) this equals the
    group-size definition.
    """
    pairs = pd.DataFrame({"t": target_genes.to_numpy(), "c": context_genes.to_numpy()})
    deg_t = pairs.groupby("t")["c"].transform("size").to_numpy()
    deg_c = pairs.groupby("c")["t"].transform("size").to_numpy()
    return np.select([(deg_t == 1) & (deg_c == 1), (deg_t > 1) & (deg_c > 1)], ["one2one", "many2many"], "one2many")


def finish_table(
    target: pd.Series, context: pd.Series, types: pd.Series | None, score: pd.Series | None
) -> pd.DataFrame:
    """Assemble, drop incomplete and duplicated pairs, derive missing homology types."""
    out = pd.DataFrame(
        {
            "target_gene": clean_symbols(target).to_numpy(),
            "context_gene": clean_symbols(context).to_numpy(),
            "homology_type": np.nan if types is None else types.to_numpy(dtype=object),
            "score": np.nan if score is None else pd.to_numeric(score, errors="coerce").to_numpy(dtype=float),
        }
    )
    out = out.dropna(subset=["target_gene", "context_gene"])
    out = out.drop_duplicates(subset=["target_gene", "context_gene"], keep="first").reset_index(drop=True)
    if types is None:
        out["homology_type"] = types_from_degrees(out["target_gene"], out["context_gene"])
    else:
        # Ensembl spells the types "ortholog_one2one"; other relation types (paralogs, gene splits) are dropped.
        out["homology_type"] = out["homology_type"].astype("string").str.strip().str.removeprefix("ortholog_")
        out = out[out["homology_type"].isin(HOMOLOGY_TYPES)].reset_index(drop=True)
        out["homology_type"] = out["homology_type"].astype(object)
    out["score"] = out["score"].astype(float)
    return out
