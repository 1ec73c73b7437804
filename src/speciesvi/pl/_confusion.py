"""Heatmaps of label tables: transferred versus true labels, and cell-type similarity."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ._embedding import _finish

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def _text_color(value: float, vmin: float, vmax: float) -> str:
    """Black on light cells, white on dark ones (viridis-like maps get darker towards ``vmin``)."""
    fraction = 0.0 if vmax <= vmin else (value - vmin) / (vmax - vmin)
    return "black" if fraction > 0.55 else "white"


def _draw_heatmap(
    table: pd.DataFrame, ax: Axes | None, cmap: str, xlabel: str, ylabel: str, colorbar_label: str, **imshow
) -> tuple[Axes, np.ndarray]:
    """An ``imshow`` of ``table`` with its labels as ticks and a labelled colour bar, on ``ax`` or a new figure."""
    values = table.to_numpy(dtype=float)
    if ax is None:
        width = max(5.0, 0.55 * values.shape[1] + 3.5)
        height = max(4.0, 0.45 * values.shape[0] + 2.5)
        _, ax = plt.subplots(figsize=(width, height))
    image = ax.imshow(values, cmap=cmap, aspect="auto", **imshow)
    colorbar = ax.figure.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    colorbar.set_label(colorbar_label)
    ax.set_xticks(np.arange(values.shape[1]), [str(c) for c in table.columns], rotation=45, ha="right")
    ax.set_yticks(np.arange(values.shape[0]), [str(i) for i in table.index])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return ax, values


def confusion_heatmap(
    confusion: pd.DataFrame,
    *,
    balanced_accuracy: float | None = None,
    title: str = "Transferred versus true labels",
    xlabel: str = "Transferred label (context cell type)",
    ylabel: str = "True label (target cell type)",
    annotate: bool = True,
    cmap: str = "viridis",
    ax: Axes | None = None,
    save: str | Path | None = None,
    show: bool | None = None,
) -> Axes:
    """Heatmap of a confusion table in percent of each true label (rows sum to 100).

    Parameters
    ----------
    confusion
        True labels as rows, transferred labels as columns, values in percent of the row, as
        :func:`speciesvi.tl.evaluate_labels` returns it.
    balanced_accuracy
        Shown in the title when given.
    title, xlabel, ylabel
        Figure texts.
    annotate
        Write every non-zero percentage into its cell.
    cmap
        Matplotlib colour map.
    ax
        Axes to draw on; a new figure otherwise.
    save
        File to write the figure to.
    show
        Show the figure.

    Returns
    -------
    matplotlib.axes.Axes
        The heatmap's axes.

    Examples
    --------
    >>> evaluation = speciesvi.tl.evaluate_labels(human.obs["cell_type"], result["label"], reference=mouse_labels)
    >>> speciesvi.pl.confusion_heatmap(evaluation.confusion, balanced_accuracy=evaluation.balanced_accuracy)
    """
    if not isinstance(confusion, pd.DataFrame):
        raise TypeError(f"confusion must be a pandas DataFrame (labels x labels), got {type(confusion).__name__}.")
    if confusion.empty:
        raise ValueError("confusion is empty: no cells had a true label the context also holds.")
    ax, values = _draw_heatmap(confusion, ax, cmap, xlabel, ylabel, "% of the true label's cells", vmin=0, vmax=100)
    if annotate:
        for row, column in zip(*np.nonzero(values >= 0.5), strict=True):
            value = values[row, column]
            ax.text(column, row, f"{value:.0f}", ha="center", va="center", fontsize=7, color=_text_color(value, 0, 100))
    if balanced_accuracy is not None:
        title = f"{title}\nbalanced accuracy {balanced_accuracy:.3f}"
    ax.set_title(title)
    _finish(ax.figure, save, show)
    return ax


def similarity_heatmap(
    table: pd.DataFrame,
    *,
    title: str = "Cell-type similarity",
    xlabel: str = "Context cell type",
    ylabel: str = "Target cell type",
    lower_is_similar: bool = True,
    mark_top: int = 2,
    cmap: str = "viridis_r",
    ax: Axes | None = None,
    save: str | Path | None = None,
    show: bool | None = None,
) -> Axes:
    """Heatmap of :meth:`speciesvi.TargetVI.cell_type_similarity`, with each row's best matches marked.

    Parameters
    ----------
    table
        Target types as rows, context types as columns.
    title, xlabel, ylabel
        Figure texts.
    lower_is_similar
        ``True`` for the likelihood-difference scale (lower = more similar, the default of
        ``cell_type_similarity``).
    mark_top
        Number of best-matching context types marked per row (1 = "●", 2 = "○").
    cmap
        Matplotlib colour map; the default shows the most similar pairs brightest.
    ax
        Axes to draw on; a new figure otherwise.
    save
        File to write the figure to.
    show
        Show the figure.

    Returns
    -------
    matplotlib.axes.Axes
        The heatmap's axes.

    Examples
    --------
    >>> table = target.cell_type_similarity()
    >>> speciesvi.pl.similarity_heatmap(table)
    """
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a pandas DataFrame, got {type(table).__name__}.")
    if table.empty:
        raise ValueError("table is empty.")
    if mark_top < 0:
        raise ValueError(f"mark_top must be >= 0, got {mark_top}.")
    if not lower_is_similar and cmap == "viridis_r":
        cmap = "viridis"
    label = "similarity (lower = more alike)" if lower_is_similar else "similarity (higher = more alike)"
    ax, values = _draw_heatmap(table, ax, cmap, xlabel, ylabel, label)
    symbols = ["●", "○"]
    for row in range(values.shape[0]):
        finite = np.where(np.isfinite(values[row]))[0]
        order = finite[np.argsort(values[row, finite] if lower_is_similar else -values[row, finite])]
        for rank, column in enumerate(order[:mark_top]):
            ax.text(column, row, symbols[min(rank, 1)], ha="center", va="center", fontsize=9, color="red")
    ax.set_title(f"{title}\n● best match, ○ second best" if mark_top >= 2 else title)
    _finish(ax.figure, save, show)
    return ax
