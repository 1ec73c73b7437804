"""Homolog log2 fold changes summarised per gene set."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from scipy.stats import binom, false_discovery_control

from ._gmt import as_gene_sets

logger = logging.getLogger(__name__)

#: Columns of the table returned by :func:`gene_set_lfc`, in order.
GENE_SET_COLUMNS = (
    "cell_type",
    "gene_set",
    "n_genes",
    "n_set",
    "lfc_median",
    "lfc_null_median",
    "share",
    "share_up",
    "share_down",
    "share_null",
    "excess",
    "rate_null",
    "pval",
    "pval_null",
    "padj",
    "rate_background",
    "pval_enrichment",
    "padj_enrichment",
    "top_genes",
)
#: Columns of a homolog LFC table that :func:`gene_set_lfc` reads (besides the gene column).
_NEEDED = ("cell_type", "lfc", "p", "lfc_null", "p_null")
#: Flagged member genes named in ``top_genes``.
N_TOP_GENES = 5
#: Fewest gene pairs per abundance class of the reference rates.
MIN_CLASS_SIZE = 20


def _gene_column(table: pd.DataFrame, species: str, gene_key: str | None) -> str:
    if gene_key is not None:
        if not isinstance(gene_key, str) or gene_key not in table:
            raise ValueError(
                f"gene_key {gene_key!r} is not a column of the table; its columns are {list(table.columns)}."
            )
        return gene_key
    if species not in ("target", "context"):
        raise ValueError(f"species must be 'target' or 'context' (the species of the gene symbols), got {species!r}.")
    column = f"gene_{species}"
    if column not in table:
        raise ValueError(f"The table has no column {column!r}; pass gene_key= (the column with the gene symbols).")
    return column


def _check_table(lfc_table: pd.DataFrame, p_threshold: float, min_genes: int) -> None:
    if not isinstance(lfc_table, pd.DataFrame):
        raise TypeError(f"lfc_table must be a DataFrame from TargetVI.homolog_lfc, got {type(lfc_table).__name__}.")
    missing = [c for c in _NEEDED if c not in lfc_table]
    if missing:
        raise ValueError(
            f"lfc_table lacks the columns {missing}; pass the result of TargetVI.homolog_lfc (columns "
            f"{list(_NEEDED)} and the gene symbols)."
        )
    if lfc_table.empty:
        raise ValueError("lfc_table is empty; compute it with TargetVI.homolog_lfc first.")
    if isinstance(p_threshold, bool) or not isinstance(p_threshold, int | float) or not 0.0 <= p_threshold < 1.0:
        raise ValueError(f"p_threshold must be a number in [0, 1), got {p_threshold!r}.")
    if isinstance(min_genes, bool) or not isinstance(min_genes, int | np.integer) or min_genes < 1:
        raise ValueError(f"min_genes must be a positive integer, got {min_genes!r}.")


def _members(genes: np.ndarray, gene_sets: dict[str, list[str]], min_genes: int) -> dict[str, np.ndarray]:
    """Per gene set with at least ``min_genes`` rows in ``genes``, the positions of those rows."""
    positions: dict[str, list[int]] = {}
    for i, gene in enumerate(genes):
        positions.setdefault(gene, []).append(i)
    out = {}
    for name, members in gene_sets.items():
        rows = [i for gene in members for i in positions.get(gene, ())]
        if len(rows) >= min_genes:
            out[name] = np.sort(np.asarray(rows, dtype=np.int64))
    return out


def _adjust(pvalues: np.ndarray) -> np.ndarray:
    return false_discovery_control(pvalues, method="bh") if pvalues.size else pvalues


def abundance_classes(rows: pd.DataFrame, n_classes: int) -> np.ndarray:
    """Equal-frequency classes (0 = least abundant) of the pairs' geometric mean decoded expression in both species.

    At most ``n_classes`` classes of at least :data:`MIN_CLASS_SIZE` pairs; one class when the table has no
    ``rho_target``/``rho_context`` columns.
    """
    n = len(rows)
    n_classes = max(1, min(int(n_classes), n // MIN_CLASS_SIZE))
    if n_classes == 1 or not {"rho_target", "rho_context"} <= set(rows.columns):
        return np.zeros(n, dtype=np.int64)
    tiny = np.finfo(np.float64).tiny
    abundance = np.log(np.clip(rows["rho_target"].to_numpy(float), tiny, None)) + np.log(
        np.clip(rows["rho_context"].to_numpy(float), tiny, None)
    )
    rank = np.argsort(np.argsort(abundance, kind="stable"), kind="stable")
    return rank * n_classes // n


def _class_rates(flagged: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Per pair, the share of flagged pairs in its abundance class, with one pseudo-pair at the type's rate.

    ``(k_c + r) / (n_c + 1)`` with ``r = (k + 1) / (n + 1)`` over all pairs: a class without flagged pairs
    gets a small positive rate, not zero.
    """
    k = np.bincount(classes, weights=flagged.astype(float))
    n = np.bincount(classes)
    overall = (k.sum() + 1.0) / (n.sum() + 1.0)
    return ((k + overall) / (n + 1.0))[classes]


def _one_type(
    rows: pd.DataFrame,
    gene_column: str,
    gene_sets: dict[str, list[str]],
    p_threshold: float,
    min_genes: int,
    n_classes: int,
) -> pd.DataFrame:
    """The gene-set summaries of one cell type (``rows``: its part of the LFC table)."""
    genes = rows[gene_column].astype(str).to_numpy(dtype=object)
    members = _members(genes, gene_sets, min_genes)
    lfc, lfc_null = rows["lfc"].to_numpy(float), rows["lfc_null"].to_numpy(float)
    flagged = rows["p"].to_numpy(float) > p_threshold
    flagged_null = rows["p_null"].to_numpy(float) > p_threshold
    classes = abundance_classes(rows, n_classes)
    rate_null, rate_background = _class_rates(flagged_null, classes), _class_rates(flagged, classes)
    records = []
    for name, idx in members.items():
        n, hits, hits_null = idx.size, flagged[idx], flagged_null[idx]
        k, k_null = int(hits.sum()), int(hits_null.sum())
        expected_null, expected = float(rate_null[idx].mean()), float(rate_background[idx].mean())
        top = idx[hits][np.argsort(-np.abs(lfc[idx[hits]]), kind="stable")][:N_TOP_GENES]
        records.append(
            {
                "gene_set": name,
                "n_genes": n,
                "n_set": len(gene_sets[name]),
                "lfc_median": float(np.median(lfc[idx])),
                "lfc_null_median": float(np.median(lfc_null[idx])),
                "share": k / n,
                "share_up": float((hits & (lfc[idx] > 0)).sum()) / n,
                "share_down": float((hits & (lfc[idx] < 0)).sum()) / n,
                "share_null": k_null / n,
                "excess": (k - k_null) / n,
                "rate_null": expected_null,
                "pval": float(binom.sf(k - 1, n, expected_null)),
                "pval_null": float(binom.sf(k_null - 1, n, expected_null)),
                "rate_background": expected,
                "pval_enrichment": float(binom.sf(k - 1, n, expected)),
                "top_genes": ",".join(genes[top]),
            }
        )
    frame = pd.DataFrame.from_records(records, columns=[c for c in GENE_SET_COLUMNS if c != "cell_type"])
    frame["padj"] = _adjust(frame["pval"].to_numpy(float))
    frame["padj_enrichment"] = _adjust(frame["pval_enrichment"].to_numpy(float))
    return frame


def gene_set_lfc(
    lfc_table: pd.DataFrame,
    gene_sets: Mapping[str, Iterable[str]] | str | Path,
    *,
    species: Literal["target", "context"] = "target",
    gene_key: str | None = None,
    p_threshold: float = 0.9,
    min_genes: int = 5,
    n_abundance_classes: int = 200,
) -> pd.DataFrame:
    """Summarise homolog log2 fold changes per cell type and gene set.

    For every cell type of ``lfc_table`` and every gene set with at least ``min_genes`` member gene pairs in it:
    the members' median log2 fold change and the share of them that differ between the species
    (``p > p_threshold``, where ``p = P(|lfc| > delta)`` from :meth:`speciesvi.TargetVI.homolog_lfc`; ``delta``
    is chosen there), beside the same on the table's gene-permuted null (``lfc_null``, ``p_null``), and two
    one-sided tests of the number ``k`` of flagged members among the ``n`` found. Both compare ``k`` with what
    genes *of like abundance* show: the pairs of the cell type are split into ``n_abundance_classes``
    equal-frequency classes of the geometric mean of ``rho_target`` and ``rho_context``, a class's rate is its
    share of flagged pairs (with one pseudo-pair at the type-wide rate ``r``: ``(k_c + r) / (n_c + 1)``), and a
    set's reference rate is the mean of its members' class rates. The test is binomial, ``P(K >= k)`` for
    ``K ~ Binomial(n, rate)``. For members with differing rates the exact count is Poisson-binomial, whose upper
    tail the binomial one bounds from above for ``k >= n * rate + 1`` (Hoeffding, 1956): small p-values are
    conservative.

    * **against the null** (``pval``, reference ``rate_null`` from ``p_null``): do the set's genes differ more
      than randomly re-paired genes of like abundance? On real species pairs most genes do (a third to half of
      all pairs have ``p > 0.9`` on the Baron pancreas pair, a few per thousand on the null), so almost every
      set passes it.
    * **enrichment** (``pval_enrichment``, reference ``rate_background`` from ``p``): does the set differ more
      than the typical homologous gene of like abundance? The over-representation question of gene-set
      analyses, and the ranking of the result.

    ``pval_null`` applies the first test to the set's count on the null (``share_null``): the share of sets
    with ``pval_null`` below ``alpha`` is the test's false-positive rate on this table, at most ``alpha`` when the
    null flags of a class do not depend on set membership. They do depend on abundance: on the Baron pair all
    null flags fall on the most abundant 1 % of genes, among them the marker genes of the type. With the
    ten sets of ``tests/data/pancreas_small.gmt`` on the fold changes of ``benchmarks/bench_gene_sets.py``
    (10 cell types, 80 rows), a single class flags 13 rows on the null, 24 classes 7, and 100 or 200 classes
    (about 24 pairs each) 1.

    Parameters
    ----------
    lfc_table
        Result of :meth:`speciesvi.TargetVI.homolog_lfc` (or :func:`lfc_table`): columns ``cell_type``, ``lfc``,
        ``p``, ``lfc_null``, ``p_null``, the gene symbols ``gene_target``, ``gene_context``, and
        ``rho_target``, ``rho_context`` for the abundance classes (without them, one class).
    gene_sets
        Gene-set name to gene symbols (e.g. from :func:`read_gmt`), or the path of a GMT file.
    species
        Whose symbols the gene sets hold: ``"target"`` matches them against ``gene_target``, ``"context"``
        against ``gene_context``. Symbols are matched exactly (human ``INS`` is not mouse ``Ins1``).
    gene_key
        Column of ``lfc_table`` to match the symbols against instead (overrides ``species``).
    p_threshold
        A gene pair counts as different when its ``p`` (or, on the null, ``p_null``) exceeds this, in [0, 1).
    min_genes
        Gene sets with fewer member gene pairs in the table are left out.
    n_abundance_classes
        Abundance classes of the reference rates, per cell type (at most one per 20 gene pairs, so fewer on
        small tables; 1: one rate for all genes).

    Returns
    -------
    pandas.DataFrame
        One row per cell type and gene set, sorted by cell type and then by ``pval_enrichment``, with the columns
        :data:`GENE_SET_COLUMNS`: ``n_genes`` (member gene pairs found), ``n_set`` (genes in the set),
        ``lfc_median``, ``lfc_null_median`` (median over the members), ``share`` (members with
        ``p > p_threshold``), ``share_up`` / ``share_down`` (those higher in the target / the context),
        ``share_null`` (members with ``p_null > p_threshold``), ``excess`` (``share - share_null``),
        ``rate_null``, ``pval``, ``pval_null``, ``padj``, ``rate_background``, ``pval_enrichment``,
        ``padj_enrichment`` (``padj*``: Benjamini-Hochberg within the cell type) and ``top_genes`` (up to 5
        flagged members, largest ``|lfc|`` first). ``DataFrame.attrs["params"]`` holds the parameters.

    Examples
    --------
    >>> lfc = target.homolog_lfc()
    >>> sets = speciesvi.tl.gene_set_lfc(lfc, speciesvi.tl.read_gmt("pancreas.gmt"), species="target")
    >>> sets[sets["padj_enrichment"] < 0.05].groupby("cell_type", observed=True).head(3)
    >>> (sets["pval_null"] < 0.05).mean()  # the null's share of flagged sets: small
    """
    _check_table(lfc_table, p_threshold, min_genes)
    if (
        isinstance(n_abundance_classes, bool)
        or not isinstance(n_abundance_classes, int | np.integer)
        or n_abundance_classes < 1
    ):
        raise ValueError(f"n_abundance_classes must be a positive integer, got {n_abundance_classes!r}.")
    if n_abundance_classes > 1 and not {"rho_target", "rho_context"} <= set(lfc_table.columns):
        logger.warning(
            "gene_set_lfc: the table has no rho_target/rho_context columns; the reference rates are not "
            "abundance matched (one class), and marker-gene sets may be flagged on the null."
        )
    gene_column = _gene_column(lfc_table, species, gene_key)
    sets = as_gene_sets(gene_sets)
    types = lfc_table["cell_type"]
    order = list(types.cat.categories) if isinstance(types.dtype, pd.CategoricalDtype) else list(pd.unique(types))
    frames = []
    for cell_type in order:
        rows = lfc_table[(types == cell_type).to_numpy()]
        if rows.empty:
            continue
        frame = _one_type(rows, gene_column, sets, float(p_threshold), int(min_genes), int(n_abundance_classes))
        frame.insert(0, "cell_type", cell_type)
        frames.append(frame)
    result = pd.concat(frames, ignore_index=True)[list(GENE_SET_COLUMNS)]
    if result.empty:
        raise ValueError(_no_set_message(lfc_table, gene_column, sets, min_genes))
    result["cell_type"] = pd.Categorical(result["cell_type"], categories=[t for t in order if t in set(types)])
    result = result.sort_values(["cell_type", "pval_enrichment", "pval"], kind="stable", ignore_index=True)
    n_kept = result["gene_set"].nunique()
    logger.info("gene_set_lfc: %d of %d gene sets with >= %d genes in %s", n_kept, len(sets), min_genes, gene_column)
    result.attrs["params"] = {
        "species": species if gene_key is None else None,
        "gene_key": gene_column,
        "p_threshold": float(p_threshold),
        "min_genes": int(min_genes),
        "n_abundance_classes": int(n_abundance_classes),
        "n_gene_sets": len(sets),
        "n_gene_sets_kept": int(n_kept),
        "delta": lfc_table.attrs.get("params", {}).get("delta"),
    }
    return result


def _no_set_message(table: pd.DataFrame, gene_column: str, sets: dict[str, list[str]], min_genes: int) -> str:
    """Why no gene set was kept, with the other gene column's overlap when it would have done better."""
    wanted = {g for genes in sets.values() for g in genes}
    found = len(wanted & set(table[gene_column].astype(str)))
    message = (
        f"No gene set has {min_genes} or more genes in the table's {gene_column!r} column ({found} of the "
        f"{len(wanted)} genes named by the sets are there)."
    )
    others = [c for c in ("gene_target", "gene_context") if c in table and c != gene_column]
    for other in others:
        found_other = len(wanted & set(table[other].astype(str)))
        if found_other > found:
            species = other.removeprefix("gene_")
            return f"{message} {found_other} are in {other!r}: do the sets use {species} symbols? Pass species={species!r}."
    return f"{message} Check the species of the symbols (species='target' or 'context') or lower min_genes."
