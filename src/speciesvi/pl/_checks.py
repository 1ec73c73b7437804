"""Plots that check a fit: model LFC against the data, and the training history."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from ..tl._pseudobulk import merge_with_pseudobulk
from ._embedding import _finish

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def lfc_vs_pseudobulk(
    lfc: pd.DataFrame,
    pseudobulk: pd.DataFrame,
    *,
    min_expression: float = 1e-4,
    n_cols: int = 4,
    title: str = "Model versus pseudo-bulk log2 fold changes (target over context)",
    save: str | Path | None = None,
    show: bool | None = None,
) -> Figure:
    """One scatter per cell type: model LFC against pseudo-bulk LFC of the same gene pairs, Spearman in the title.

    Parameters
    ----------
    lfc
        :meth:`speciesvi.TargetVI.homolog_lfc` output (``cell_type``, ``gene_target``, ``gene_context``, ``lfc``).
    pseudobulk
        :func:`speciesvi.tl.pseudobulk_lfc` output (the same keys, ``lfc``, ``expression_target``,
        ``expression_context``).
    min_expression
        Only pairs whose pseudo-bulk expression exceeds this in either species are drawn and correlated.
    n_cols
        Panels per row.
    title
        Figure title.
    save
        File to write the figure to.
    show
        Show the figure.

    Returns
    -------
    matplotlib.figure.Figure
        The figure, one axes per cell type both tables hold.

    Examples
    --------
    >>> bulk = speciesvi.tl.pseudobulk_lfc(human, mouse, labels_key="cell_type")
    >>> speciesvi.pl.lfc_vs_pseudobulk(target.homolog_lfc(), bulk)
    """
    if n_cols < 1:
        raise ValueError(f"n_cols must be >= 1, got {n_cols}.")
    merged = merge_with_pseudobulk(lfc, pseudobulk, min_expression)
    merged = merged[merged["expressed"].to_numpy()]
    types = sorted(merged["cell_type"].unique())
    if not types:
        raise ValueError("The two tables share no (cell type, gene pair) with expression above min_expression.")
    n_rows = int(np.ceil(len(types) / n_cols))
    cols = min(n_cols, len(types))
    fig, axes = plt.subplots(n_rows, cols, figsize=(3.3 * cols, 3.2 * n_rows + 0.6), squeeze=False)
    for ax, cell_type in zip(axes.ravel(), types, strict=False):
        rows = merged[merged["cell_type"] == cell_type]
        x, y = rows["lfc_pseudobulk"].to_numpy(), rows["lfc_model"].to_numpy()
        ax.scatter(x, y, s=3, alpha=0.4, lw=0, c="#1f77b4")
        low, high = np.nanmin([x.min(), y.min()]), np.nanmax([x.max(), y.max()])
        ax.plot([low, high], [low, high], c="grey", lw=0.8, ls="--")
        rho = spearmanr(x, y).statistic if len(rows) > 2 else np.nan
        ax.set_title(f"{cell_type}\nSpearman {rho:.2f} ({len(rows):,} pairs)", fontsize=9)
        ax.set_xlabel("pseudo-bulk LFC")
        ax.set_ylabel("model LFC")
    for ax in axes.ravel()[len(types) :]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    _finish(fig, save, show)
    return fig


def training_history(
    model,
    *,
    title: str | None = None,
    save: str | Path | None = None,
    show: bool | None = None,
) -> Figure:
    """Training curves of a ContextVI or TargetVI: ELBO, KL divergence and (TargetVI) the alignment term.

    Parameters
    ----------
    model
        A trained :class:`speciesvi.ContextVI` or :class:`speciesvi.TargetVI`.
    title
        Figure title; defaults to the model's class name.
    save
        File to write the figure to.
    show
        Show the figure.

    Returns
    -------
    matplotlib.figure.Figure
        One panel per logged quantity (train and, where logged, validation).

    Examples
    --------
    >>> speciesvi.pl.training_history(target)
    """
    history = getattr(model, "history", None)
    if not history:
        raise ValueError("The model has no training history; train it first (model.train()).")
    panels = [
        ("elbo", "negative ELBO"),
        ("kl_local", "KL divergence (local)"),
        ("alignment", "alignment term"),
    ]
    panels = [(key, label) for key, label in panels if f"{key}_train" in history]
    if not panels:
        raise ValueError(f"No ELBO, KL or alignment curves in the history; it holds {sorted(history)}.")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels, strict=True):
        for split, style in (("train", "-"), ("validation", "--")):
            curve = history.get(f"{key}_{split}")
            if curve is not None and len(curve):
                ax.plot(curve.index.to_numpy(), curve.iloc[:, 0].to_numpy(), style, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(label)
        ax.legend(frameon=False, fontsize=8)
    fig.suptitle(title or f"{type(model).__name__} training history")
    fig.tight_layout()
    _finish(fig, save, show)
    return fig
