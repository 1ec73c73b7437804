"""Homology from two eggNOG-mapper annotation files (``*.emapper.annotations``), one per species.

eggNOG-mapper (version 2) assigns each query protein to eggNOG orthologous groups (OGs) at several taxonomic
levels, listed from the broadest to the narrowest in the ``eggNOG_OGs`` column
(``COG5048@1|root,...,4GAT1@40674|Mammalia``), and names it in ``Preferred_name``. speciesvi's policy:

1. The genes are the ``Preferred_name`` symbols; proteins without one (``-``) are left out, and several proteins
   of one symbol (isoforms) count once.
2. Genes are compared at a single taxonomic level: the narrowest level found in both files that covers at least
   half as many genes as the best-covered shared level (so that a narrow level reached by a few genes only does not
   leave the others without homologs). A level's depth is its mean position in the ``eggNOG_OGs`` lists of both
   files (the root comes first), so the narrowest level is the one listed last on average, e.g. Mammalia for
   hamster and mouse. The level is logged and recorded in ``DataFrame.attrs["eggnog_level"]``.
3. A target gene and a context gene are homologs when they belong to the same OG at that level. The homology type
   follows the number of partners of each gene (``one2one`` when both have one), as for OrthoFinder tables.

``Preferred_name`` is eggNOG's name for the OG member, which can differ in case or spelling from the symbols of
your data; compare ``table["target_gene"]`` with ``adata.var_names`` before translating genes.
"""

from __future__ import annotations

import gzip
import io
import logging
from pathlib import Path

import pandas as pd

from ._homology_tidy import clean_symbols, finish_table

logger = logging.getLogger(__name__)

_REQUIRED = ("eggNOG_OGs", "Preferred_name")
#: A shared level is used only if it holds at least this share of the genes of the best-covered shared level.
MIN_LEVEL_COVERAGE = 0.5


def is_emapper_file(path: str | Path) -> bool:
    """Whether ``path`` looks like eggNOG-mapper output (name ``*.emapper.annotations[.gz]`` or a ``##`` header)."""
    path = Path(path)
    if ".emapper.annotations" in path.name:
        return True
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
            first = handle.readline()
    except OSError:
        return False
    return first.startswith(("##", "#query"))


def read_emapper(path: str | Path) -> pd.DataFrame:
    """Read an eggNOG-mapper annotation file: ``##`` comment lines skipped, ``#query`` header kept, strings only.

    Raises
    ------
    ValueError
        The file has no ``#query`` header line or lacks the ``eggNOG_OGs`` / ``Preferred_name`` columns.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
        lines = [line for line in handle if not line.startswith("##") and line.strip()]
    if not lines or not lines[0].startswith("#"):
        raise ValueError(
            f"{path} is not an eggNOG-mapper annotation file: no '#query' header line. Pass the "
            "'<name>.emapper.annotations' file written by emapper.py (version 2)."
        )
    lines[0] = lines[0][1:]
    df = pd.read_csv(io.StringIO("".join(lines)), sep="\t", dtype=str, keep_default_na=False)
    missing = [column for column in _REQUIRED if column not in df.columns]
    if missing:
        raise ValueError(
            f"The eggNOG-mapper file {path} lacks the columns {missing} (it has {list(df.columns)[:8]}...); "
            "speciesvi reads the output of emapper.py version 2, whose columns include 'eggNOG_OGs' and "
            "'Preferred_name'."
        )
    return df


def _memberships(df: pd.DataFrame) -> pd.DataFrame:
    """Long table (gene, og, level, position) of the OG memberships of each named gene."""
    genes = clean_symbols(df["Preferred_name"])
    ogs = df["eggNOG_OGs"].astype("string").fillna("").str.split(",")
    long = pd.DataFrame({"gene": genes, "entry": ogs}).dropna(subset=["gene"])
    long["position"] = long["entry"].map(lambda entries: list(range(len(entries))))
    long = long.explode(["entry", "position"])
    parts = long["entry"].astype("string").str.strip().str.extract(r"^(?P<og>[^@]+)@(?P<level>.+)$")
    long = pd.concat([long[["gene", "position"]], parts], axis=1).dropna()
    long["position"] = long["position"].astype(int)
    return long.drop_duplicates(subset=["gene", "og", "level"])


def eggnog_homology(target_annotations: pd.DataFrame, context_annotations: pd.DataFrame) -> pd.DataFrame:
    """Tidy homology table from the eggNOG-mapper annotations of a target and a context species.

    Parameters
    ----------
    target_annotations, context_annotations
        The two annotation tables, as :func:`read_emapper` returns them.

    Returns
    -------
    Tidy table (score NaN) of the ``Preferred_name`` symbols that share an OG at the narrowest well-covered
    taxonomic level of both files (module docstring); ``attrs["eggnog_level"]`` names that level.

    Raises
    ------
    ValueError
        The two files share no taxonomic level (nothing to compare) or no OG at that level.

    Examples
    --------
    >>> import pandas as pd
    >>> hamster = pd.DataFrame(
    ...     {"eggNOG_OGs": ["KOG4760@2759|Eukaryota,4GAT1@40674|Mammalia"], "Preferred_name": ["Gcg"]}
    ... )
    >>> mouse = pd.DataFrame({"eggNOG_OGs": ["KOG4760@2759|Eukaryota,4GAT1@40674|Mammalia"], "Preferred_name": ["Gcg"]})
    >>> table = eggnog_homology(hamster, mouse)
    >>> table[["target_gene", "context_gene", "homology_type"]].values.tolist(), table.attrs["eggnog_level"]
    ([['Gcg', 'Gcg', 'one2one']], '40674|Mammalia')
    """
    target, context = _memberships(target_annotations), _memberships(context_annotations)
    shared = sorted(set(target["level"]) & set(context["level"]))
    if not shared:
        raise ValueError(
            "The two eggNOG-mapper files share no taxonomic level in their eggNOG_OGs columns, so no genes can be "
            "paired; annotate both proteomes with the same eggNOG database and tax scope (emapper.py --tax_scope)."
        )
    both = pd.concat([target.assign(side="t"), context.assign(side="c")])
    both = both[both["level"].isin(shared)]
    depth = both.groupby("level")["position"].mean()
    coverage = both.drop_duplicates(["side", "gene", "level"]).groupby("level").size()
    candidates = depth[coverage.reindex(depth.index) >= MIN_LEVEL_COVERAGE * coverage.max()]
    level = str(candidates.sort_values(kind="stable").index[-1])
    t = target.loc[target["level"] == level, ["gene", "og"]]
    c = context.loc[context["level"] == level, ["gene", "og"]]
    pairs = t.merge(c, on="og", suffixes=("_t", "_c"), sort=False)
    table = finish_table(pairs["gene_t"], pairs["gene_c"], None, None)
    logger.info(
        "eggNOG-mapper: %d gene pairs from %d shared OGs at level %s (%d target, %d context genes at that level)",
        len(table),
        pairs["og"].nunique(),
        level,
        t["gene"].nunique(),
        c["gene"].nunique(),
    )
    if table.empty:
        raise ValueError(f"The two eggNOG-mapper files share no orthologous group at level {level}.")
    table.attrs["eggnog_level"] = level
    return table
