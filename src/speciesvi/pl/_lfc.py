"""Log2 fold change versus probability of the homologous genes of one cell type."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ._embedding import SPECIES_COLORS, _finish

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_NEEDED = ("cell_type", "gene_target", "lfc", "p")


def lfc_probability(
    lfc: pd.DataFrame,
    cell_type: str | None = None,
    *,
    delta: float | None = None,
    p_threshold: float = 0.9,
    n_top: int = 5,
    show_null: bool = True,
    target_name: str = "target",
    context_name: str = "context",
    title: str | None = None,
    point_size: float = 6.0,
    ax: Axes | None = None,
    save: str | Path | None = None,
    show: bool | None = None,
) -> Axes:
    """Scatter the log2 fold change of every homologous gene pair against the probability of a change.

    Pairs with ``p > p_threshold`` are coloured by the species with the higher expression, and the
    ``n_top`` pairs with the largest and the smallest fold change among them are named (target gene).
    The gene-permuted null is drawn in grey behind them.

    Parameters
    ----------
    lfc
        Result of :meth:`speciesvi.TargetVI.homolog_lfc` (columns ``cell_type``, ``gene_target``, ``lfc``,
        ``p``, and ``lfc_null``, ``p_null`` for the null).
    cell_type
        Cell type to draw; may be left out when the table holds one.
    delta
        The fold-change threshold of ``p`` (dashed lines at ``±delta``); defaults to the one stored in
        ``lfc.attrs["params"]``, else 1.
    p_threshold
        Probability above which pairs count as different (dotted line).
    n_top
        Pairs named on each side.
    show_null
        Draw the null comparison (``lfc_null``, ``p_null``) in grey.
    target_name, context_name
        Names of the species in the labels.
    title
        Axes title; defaults to the cell type.
    point_size
        Marker size.
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
    >>> table = target.homolog_lfc()
    >>> speciesvi.pl.lfc_probability(table, "type B pancreatic cell", target_name="human", context_name="mouse")
    """
    if not isinstance(lfc, pd.DataFrame) or not set(_NEEDED) <= set(lfc.columns):
        raise TypeError(f"lfc must be a DataFrame from TargetVI.homolog_lfc with the columns {list(_NEEDED)}.")
    types = pd.unique(lfc["cell_type"].astype(str))
    if cell_type is None:
        if len(types) != 1:
            raise ValueError(f"The table holds {len(types)} cell types; pass cell_type= (one of {list(types)[:10]}).")
        cell_type = str(types[0])
    rows = lfc[lfc["cell_type"].astype(str) == cell_type]
    if rows.empty:
        raise ValueError(f"Cell type {cell_type!r} is not in the table; it holds {list(types)[:10]}.")
    if not 0.0 <= p_threshold <= 1.0:
        raise ValueError(f"p_threshold must be in [0, 1], got {p_threshold}.")
    if n_top < 0:
        raise ValueError(f"n_top must be non-negative, got {n_top}.")
    if delta is None:
        delta = float(lfc.attrs.get("params", {}).get("delta", 1.0))

    if ax is None:
        fig, ax = plt.subplots(figsize=(6.5, 5.0))
    else:
        fig = ax.figure
    if show_null and {"lfc_null", "p_null"} <= set(rows.columns):
        ax.scatter(rows["lfc_null"], rows["p_null"], s=point_size, c="#c7c7c7", lw=0, label="gene-permuted null")
    x, y = rows["lfc"].to_numpy(), rows["p"].to_numpy()
    called = y > p_threshold
    up, down = called & (x > 0), called & (x < 0)
    ax.scatter(x[~called], y[~called], s=point_size, c="#555555", lw=0, label=f"p ≤ {p_threshold:g}")
    ax.scatter(
        x[up], y[up], s=point_size, c=SPECIES_COLORS["target"], lw=0, label=f"higher in {target_name} ({up.sum()})"
    )
    ax.scatter(
        x[down],
        y[down],
        s=point_size,
        c=SPECIES_COLORS["context"],
        lw=0,
        label=f"higher in {context_name} ({down.sum()})",
    )
    for bound in (-delta, delta):
        ax.axvline(bound, color="#888888", ls="--", lw=0.8)
    ax.axhline(p_threshold, color="#888888", ls=":", lw=0.8)
    genes = rows["gene_target"].astype(str).to_numpy()
    if n_top:
        for mask, pick in ((up, np.argsort(-x)), (down, np.argsort(x))):
            chosen = [i for i in pick if mask[i]][:n_top]
            for rank, i in enumerate(chosen):
                ax.annotate(
                    genes[i],
                    (x[i], y[i]),
                    xytext=(4 if x[i] > 0 else -4, -10 * rank - 4),
                    textcoords="offset points",
                    ha="left" if x[i] > 0 else "right",
                    fontsize=7,
                    arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "#444444"},
                )
    ax.set_xlabel(f"log2 fold change ({target_name} / {context_name})")
    ax.set_ylabel(f"P(|log2 fold change| > {delta:g})")
    ax.set_ylim(-0.03, 1.05)
    ax.set_title(title if title is not None else f"{cell_type}: homologous genes")
    ax.legend(loc="lower center", frameon=False, fontsize=7, ncol=2)
    _finish(fig, save, show)
    return ax
