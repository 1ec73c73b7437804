"""Gene-set summaries of homolog log2 fold changes: the top sets of every cell type as a dot plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from ._embedding import _finish

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_NEEDED = ("cell_type", "gene_set", "lfc_median", "share")
#: Columns ranked by ascending value; the others by descending value (``lfc_median``: by its absolute value).
_ASCENDING = ("pval", "padj", "pval_enrichment", "padj_enrichment")


def _top_sets(table: pd.DataFrame, types: list[str], n_top: int, rank_by: str) -> list[str]:
    """The ``n_top`` best-ranked gene sets of every cell type, in order of first appearance."""
    chosen: list[str] = []
    for cell_type in types:
        rows = table[table["cell_type"].astype(str) == cell_type]
        if rank_by in _ASCENDING:
            rows = rows.sort_values(rank_by, kind="stable")
        else:
            key = rows[rank_by].abs() if rank_by == "lfc_median" else rows[rank_by]
            rows = rows.loc[key.sort_values(ascending=False, kind="stable").index]
        chosen += [s for s in rows["gene_set"].astype(str).head(n_top) if s not in chosen]
    return chosen


def gene_set_lfc(
    table: pd.DataFrame,
    cell_types: str | Sequence[str] | None = None,
    *,
    n_top: int = 5,
    rank_by: str = "pval_enrichment",
    alpha: float = 0.05,
    vmax: float | None = None,
    target_name: str = "target",
    context_name: str = "context",
    title: str | None = None,
    max_dot_size: float = 220.0,
    ax: Axes | None = None,
    save: str | Path | None = None,
    show: bool | None = None,
) -> Axes:
    """Dot plot of the top gene sets of every cell type: median log2 fold change and share of changed genes.

    Rows are the union of every cell type's ``n_top`` best-ranked gene sets, columns the cell types. A dot's
    colour is the median log2 fold change of the set's genes (target over context), its area the share of
    them with ``p > p_threshold``; a black ring marks ``padj_enrichment < alpha`` (more changed genes than genes
    of like abundance show).

    Parameters
    ----------
    table
        Result of :func:`speciesvi.tl.gene_set_lfc`.
    cell_types
        Cell types (columns) to draw, in order; defaults to all in the table.
    n_top
        Gene sets taken from each cell type.
    rank_by
        Column that ranks the gene sets: p-values (``pval_enrichment``, ``padj_enrichment``, ``pval``, ``padj``)
        ascending, ``lfc_median`` by absolute value, others (``share``, ``excess``) descending.
    alpha
        Threshold of ``padj_enrichment`` for the ring.
    vmax
        Colour scale limit (log2 units, symmetric); defaults to the largest ``|lfc_median|`` drawn.
    target_name, context_name
        Names of the species in the labels.
    title
        Axes title.
    max_dot_size
        Marker area of a share of 1.
    ax
        Axes to draw on; a new figure otherwise.
    save
        File to write the figure to.
    show
        Show the figure.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on.

    Examples
    --------
    >>> sets = speciesvi.tl.gene_set_lfc(target.homolog_lfc(), "pancreas.gmt")
    >>> speciesvi.pl.gene_set_lfc(sets, n_top=3, target_name="human", context_name="mouse")
    """
    if not isinstance(table, pd.DataFrame) or not set(_NEEDED) <= set(table.columns):
        raise TypeError(f"table must be a DataFrame from speciesvi.tl.gene_set_lfc with the columns {list(_NEEDED)}.")
    if table.empty:
        raise ValueError("table is empty; no gene set had min_genes genes in the LFC table.")
    if rank_by not in table.columns:
        raise ValueError(f"rank_by must be a column of the table, e.g. 'pval_enrichment' or 'share'; got {rank_by!r}.")
    if isinstance(n_top, bool) or not isinstance(n_top, int | np.integer) or n_top < 1:
        raise ValueError(f"n_top must be a positive integer, got {n_top!r}.")
    held = list(pd.unique(table["cell_type"].astype(str)))
    types = held if cell_types is None else [cell_types] if isinstance(cell_types, str) else list(cell_types)
    unknown = [t for t in types if t not in held]
    if unknown or not types:
        raise ValueError(f"Cell types {unknown} are not in the table; it holds {held[:10]}.")
    sets = _top_sets(table, types, int(n_top), rank_by)
    grid = table[table["cell_type"].astype(str).isin(types) & table["gene_set"].astype(str).isin(sets)]
    x = grid["cell_type"].astype(str).map({t: i for i, t in enumerate(types)}).to_numpy()
    y = grid["gene_set"].astype(str).map({s: i for i, s in enumerate(sets)}).to_numpy()
    lfc, share = grid["lfc_median"].to_numpy(float), grid["share"].to_numpy(float)
    limit = float(vmax) if vmax is not None else max(float(np.abs(lfc).max(initial=0.0)), 0.5)

    if ax is None:
        fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(types) + 2.5, 1.2 + 0.35 * len(sets)))
    else:
        fig = ax.figure
    dots = ax.scatter(
        x, y, s=max_dot_size * np.clip(share, 0.02, 1.0), c=lfc, cmap="RdBu_r", vmin=-limit, vmax=limit, lw=0
    )
    if "padj_enrichment" in grid:
        ring = grid["padj_enrichment"].to_numpy(float) < alpha
        ax.scatter(
            x[ring], y[ring], s=max_dot_size * np.clip(share[ring], 0.02, 1.0), facecolors="none", lw=1.2, ec="k"
        )
    ax.set_xticks(range(len(types)), types, rotation=45, ha="right")
    ax.set_yticks(range(len(sets)), sets)
    ax.set_xlim(-0.6, len(types) - 0.4)
    ax.set_ylim(len(sets) - 0.5, -0.5)
    ax.grid(color="#eeeeee", lw=0.6)
    ax.set_axisbelow(True)
    colorbar = fig.colorbar(dots, ax=ax, fraction=0.05, pad=0.02)
    colorbar.set_label(f"median log2 fold change\n({target_name} / {context_name})")
    handles = [
        Line2D([], [], ls="", marker="o", color="#888888", markersize=np.sqrt(max_dot_size * v), label=f"{v:.0%}")
        for v in (0.25, 0.5, 1.0)
    ]
    handles.append(Line2D([], [], ls="", marker="o", mfc="none", mec="k", markersize=8, label=f"padj < {alpha:g}"))
    ax.legend(
        handles=handles,
        title="genes changed",
        loc="upper left",
        bbox_to_anchor=(1.16, 1.0),
        frameon=False,
        fontsize=7,
        title_fontsize=8,
        labelspacing=1.2,
    )
    ax.set_title(title if title is not None else f"Gene sets: {target_name} vs {context_name}")
    _finish(fig, save, show)
    return ax
