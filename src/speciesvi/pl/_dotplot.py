"""Dot plot of transferred labels against the user's clusters, as ``celltypist.dotplot`` draws it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from ._embedding import _finish

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes

#: Shares drawn in the size legend.
_LEGEND_SHARES = (0.25, 0.5, 0.75, 1.0)


def _column(adata: AnnData, key: str, what: str, hint: str) -> pd.Series:
    if not isinstance(key, str) or key not in adata.obs:
        raise ValueError(f"adata.obs has no column {key!r} ({what}); {hint}")
    return adata.obs[key]


def _probability_order(adata: AnnData, key: str) -> list[str]:
    """Label order of ``obsm[f"{key}_probabilities"]``, from the ``transfer_labels`` parameters that wrote it."""
    for name, params in adata.uns.items():
        if not (isinstance(name, str) and name.endswith("_params") and isinstance(params, dict)):
            continue
        for labels_key, order in dict(params.get("label_order", {})).items():
            if f"{name.removesuffix('_params')}_{labels_key}" == key:
                return [str(label) for label in order]
    raise ValueError(
        f"No label order for obsm[{key + '_probabilities'!r}] in adata.uns; run TargetVI.transfer_labels first "
        "(it writes both), or use color='confidence'."
    )


def dotplot_table(
    labels: Sequence | pd.Series,
    clusters: Sequence | pd.Series,
    values: np.ndarray,
    columns: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Share of each cluster's cells given each label, and the mean of ``values`` there.

    Parameters
    ----------
    labels, clusters
        Per-cell transferred label and cluster.
    values
        ``(n_cells,)`` confidence of every cell (averaged over the cluster's cells with the label), or
        ``(n_cells, len(columns))`` probabilities of every label (averaged over all cells of the cluster).
    columns
        The labels of the columns of 2-D ``values``.

    Returns
    -------
    share, mean
        Clusters (rows) x labels (columns).

    Examples
    --------
    >>> share, mean = dotplot_table(["a", "a", "b"], ["0", "0", "0"], np.array([0.9, 0.7, 0.4]))
    >>> share.round(2).to_dict("records"), mean.round(2).to_dict("records")
    ([{'a': 0.67, 'b': 0.33}], [{'a': 0.8, 'b': 0.4}])
    """
    frame = pd.DataFrame({"label": np.asarray(labels, dtype=object), "cluster": np.asarray(clusters, dtype=object)})
    if frame.isna().any().any():
        raise ValueError("labels and clusters must not be missing; fill them (e.g. with 'Unassigned') first.")
    frame = frame.astype(str)
    share = pd.crosstab(frame["cluster"], frame["label"], normalize="index")
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        frame["value"] = values
        mean = frame.pivot_table(index="cluster", columns="label", values="value", aggfunc="mean", observed=True)
    else:
        if columns is None or values.shape[1] != len(columns):
            raise ValueError("2-D values need columns=, one label per column of values.")
        per_label = pd.DataFrame(values, columns=[str(c) for c in columns])
        mean = per_label.groupby(frame["cluster"].to_numpy()).mean()
    return share, mean.reindex(index=share.index, columns=share.columns)


def transfer_dotplot(
    adata: AnnData,
    key: str,
    groupby: str,
    *,
    color: Literal["confidence", "probability"] = "confidence",
    confidence_key: str | None = None,
    labels: Sequence[str] | None = None,
    cmap: str = "Reds",
    dot_max: float = 250.0,
    title: str | None = None,
    ax: Axes | None = None,
    save: str | Path | None = None,
) -> Axes:
    """Transferred labels (columns) against the user's clusters (rows), as ``celltypist.dotplot``.

    The size of a dot is the share of the cluster's cells given that label; its colour is the mean
    confidence of those cells (``color="confidence"``), or the mean probability (vote share) of that
    label over all cells of the cluster (``color="probability"``, from ``obsm[f"{key}_probabilities"]``).

    Parameters
    ----------
    adata
        The target AnnData after :meth:`speciesvi.TargetVI.transfer_labels`.
    key
        ``obs`` column of transferred labels, e.g. ``"speciesvi_cell_ontology_class"`` or its
        ``..._majority_voting``.
    groupby
        ``obs`` column with the user's clusters (e.g. ``"leiden"``).
    color
        ``"confidence"`` or ``"probability"`` (labels without a probability column, such as
        "Unassigned" or prob-match labels joined by "|", are drawn grey).
    confidence_key
        ``obs`` column of the confidence; defaults to ``f"{key}_confidence"``.
    labels
        Labels to show, in this order; defaults to every label given to a cell, "Unassigned" last.
    cmap
        Colour map.
    dot_max
        Marker area (points^2) of a dot of share 1.
    title
        Figure title; defaults to ``key``.
    ax
        Axes to draw on; a new figure otherwise.
    save
        File to write the figure to.

    Returns
    -------
    matplotlib.axes.Axes
        The dot plot's axes (call ``matplotlib.pyplot.show()`` to display it).

    Examples
    --------
    >>> target.transfer_labels()
    >>> ax = speciesvi.pl.transfer_dotplot(human, key="speciesvi_cell_ontology_class", groupby="leiden")
    """
    if color not in ("confidence", "probability"):
        raise ValueError(f"color must be 'confidence' or 'probability', got {color!r}.")
    if not dot_max > 0:
        raise ValueError(f"dot_max must be a positive marker area, got {dot_max!r}.")
    label_column = _column(adata, key, "transferred labels", "pass an obs key written by TargetVI.transfer_labels.")
    clusters = _column(adata, groupby, "clusters", "pass an obs column with the cell clusters, e.g. 'leiden'.")
    if color == "confidence":
        confidence_key = f"{key}_confidence" if confidence_key is None else confidence_key
        values = _column(adata, confidence_key, "confidence", "pass confidence_key= or use color='probability'.")
        share, mean = dotplot_table(label_column, clusters, values.to_numpy(dtype=float))
    else:
        if f"{key}_probabilities" not in adata.obsm:
            raise ValueError(
                f"adata.obsm has no {key + '_probabilities'!r}; pass the per-cell labels key of transfer_labels "
                "(not its majority voting) or use color='confidence'."
            )
        order = _probability_order(adata, key)
        share, mean = dotplot_table(label_column, clusters, np.asarray(adata.obsm[f"{key}_probabilities"]), order)
    if labels is None:
        labels = sorted(c for c in share.columns if c != "Unassigned") + [c for c in share.columns if c == "Unassigned"]
    else:
        labels = [str(label) for label in labels]
    rows_order = list(share.index)
    if isinstance(clusters.dtype, pd.CategoricalDtype):  # the clustering's own order, not the string sort
        rows_order = [str(c) for c in clusters.cat.categories if str(c) in share.index]
    share = share.reindex(index=rows_order, columns=labels, fill_value=0.0)
    mean = mean.reindex(index=rows_order, columns=labels)
    rows, cols = np.nonzero(share.to_numpy() > 0)
    sizes = share.to_numpy()[rows, cols] * dot_max
    colours = mean.to_numpy()[rows, cols]
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(labels) + 3.0), max(3.0, 0.4 * len(share.index) + 2.0)))
    known = np.isfinite(colours)
    ax.scatter(cols[~known], rows[~known], s=sizes[~known], color="#bdbdbd", edgecolors="grey", linewidths=0.5)
    dots = ax.scatter(
        cols[known], rows[known], s=sizes[known], c=colours[known], cmap=cmap, vmin=0.0, vmax=1.0, edgecolors="grey"
    )
    colorbar = ax.figure.colorbar(dots, ax=ax, fraction=0.04, pad=0.02)
    colorbar.set_label("mean confidence" if color == "confidence" else "mean probability")
    handles = [
        Line2D([], [], marker="o", linestyle="", markersize=np.sqrt(s * dot_max), color="grey") for s in _LEGEND_SHARES
    ]
    ax.legend(
        handles,
        [f"{s:.0%}" for s in _LEGEND_SHARES],
        title="cells in cluster",
        loc="upper left",
        bbox_to_anchor=(1.25, 1.0),
        frameon=False,
        labelspacing=1.2,
    )
    ax.set_xticks(np.arange(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(np.arange(len(share.index)), [str(c) for c in share.index])
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.set_ylim(len(share.index) - 0.4, -0.6)
    ax.set_xlabel("transferred label")
    ax.set_ylabel(groupby)
    ax.set_title(key if title is None else title)
    _finish(ax.figure, save, None)
    return ax
