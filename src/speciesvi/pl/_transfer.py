"""Plots of label transfer: one target cell's similarity to the context, and accuracy by method and top-k."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ._embedding import SPECIES_COLORS, _finish

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def cell_similarity(
    coordinates: np.ndarray,
    similarity: np.ndarray | pd.Series,
    *,
    target_coordinates: np.ndarray | None = None,
    title: str = "Similarity of every context cell to one target cell",
    clip_quantile: float = 0.9,
    point_size: float = 5.0,
    ax: Axes | None = None,
    save: str | Path | None = None,
    show: bool | None = None,
) -> Axes:
    """Context cells on a 2D embedding, coloured by their similarity to one target cell.

    Parameters
    ----------
    coordinates
        ``(n_context, 2)`` embedding of the context cells (e.g. their part of a joint UMAP).
    similarity
        ``(n_context,)`` similarity of each context cell (lower = more alike, as
        :meth:`speciesvi.TargetVI.transfer_labels_cell` returns it, in context order; NaN for cells not scored).
    target_coordinates
        ``(2,)`` position of the target cell on the same embedding; drawn as a red star.
    title
        Figure title.
    clip_quantile
        Colours saturate at this quantile of the similarities, so the few very unlike cells do not flatten
        the scale.
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
        The scatter's axes.

    Examples
    --------
    >>> cell = target.transfer_labels_cell(0).sort_values("context_index")
    >>> speciesvi.pl.cell_similarity(umap_mouse, cell["similarity"].to_numpy(), target_coordinates=umap_human[0])
    """
    coordinates = np.asarray(coordinates, dtype=float)
    similarity = np.asarray(similarity, dtype=float)
    if coordinates.ndim != 2 or coordinates.shape[1] != 2:
        raise ValueError(f"coordinates must be (n_cells, 2), got shape {coordinates.shape}.")
    if similarity.shape != (coordinates.shape[0],):
        raise ValueError(
            f"similarity must hold one value per context cell ({coordinates.shape[0]}), got shape {similarity.shape}."
        )
    if not 0 < clip_quantile <= 1:
        raise ValueError(f"clip_quantile must be in (0, 1], got {clip_quantile}.")
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.5, 5.5))
    else:
        fig = ax.figure
    scored = np.isfinite(similarity)
    ax.scatter(*coordinates[~scored].T, s=point_size, c="#dddddd", lw=0, label="not scored")
    order = np.argsort(-similarity[scored])  # most similar cells drawn last, on top
    low = np.nanmin(similarity) if scored.any() else 0.0
    high = np.nanquantile(similarity, clip_quantile) if scored.any() else 1.0
    points = ax.scatter(
        *coordinates[scored][order].T,
        s=point_size,
        c=similarity[scored][order],
        cmap="magma",
        vmin=low,
        vmax=max(high, low + 1e-9),
        lw=0,
    )
    colorbar = fig.colorbar(points, ax=ax, fraction=0.04, pad=0.02, extend="max")
    colorbar.set_label("similarity, nats (lower = more alike)")
    if target_coordinates is not None:
        ax.scatter(
            *np.asarray(target_coordinates, dtype=float).reshape(2),
            marker="*",
            s=250,
            c=SPECIES_COLORS["target"],
            edgecolors="white",
            label="target cell",
        )
        ax.legend(loc="best", frameon=False, fontsize=8)
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    _finish(fig, save, show)
    return ax


def transfer_accuracy(
    accuracy: Mapping[str, Mapping[int, float]] | pd.DataFrame,
    *,
    title: str = "Label transfer: balanced accuracy by method and top-k vote",
    ylabel: str = "balanced accuracy",
    ax: Axes | None = None,
    save: str | Path | None = None,
    show: bool | None = None,
) -> Axes:
    """Grouped bars of balanced accuracy: one group per top-k vote size, one bar per method.

    Parameters
    ----------
    accuracy
        ``{method: {k: balanced accuracy}}`` or a DataFrame with methods as columns and k as index, e.g.
        data-level neighbours (:func:`speciesvi.pp.homolog_neighbors`) against speciesvi's likelihood
        candidates (:meth:`speciesvi.TargetVI.transfer_labels` with ``store_similarities=True``).
    title, ylabel
        Figure texts.
    ax
        Axes to draw on; a new figure otherwise.
    save
        File to write the figure to.
    show
        Show the figure.

    Returns
    -------
    matplotlib.axes.Axes
        The bar chart's axes.

    Examples
    --------
    >>> speciesvi.pl.transfer_accuracy({"data level": {5: 0.80, 25: 0.83}, "speciesvi": {5: 0.86, 25: 0.86}})
    """
    table = accuracy if isinstance(accuracy, pd.DataFrame) else pd.DataFrame(accuracy)
    if table.empty:
        raise ValueError("accuracy is empty.")
    values = table.to_numpy(dtype=float)
    if np.nanmin(values) < 0 or np.nanmax(values) > 1:
        raise ValueError("balanced accuracies must lie in [0, 1].")
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(table) + 2.5), 4.5))
    else:
        fig = ax.figure
    width = 0.8 / table.shape[1]
    positions = np.arange(len(table))
    colors = plt.get_cmap("tab10").colors
    for i, method in enumerate(table.columns):
        bars = ax.bar(positions + (i - (table.shape[1] - 1) / 2) * width, values[:, i], width, label=str(method))
        for bar in bars:
            bar.set_color(colors[i % len(colors)])
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    ax.set_xticks(positions, [str(k) for k in table.index])
    ax.set_xlabel("top-k candidates voting")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.08)
    ax.legend(loc="lower right", frameon=True, fontsize=8)
    ax.set_title(title)
    _finish(fig, save, show)
    return ax
