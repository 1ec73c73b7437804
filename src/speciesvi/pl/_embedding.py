"""The joint 2D embedding of both species."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.axes import Axes

#: Colours of the two species in every figure.
SPECIES_COLORS = {"context": "#1f77b4", "target": "#d62728"}


def label_palette(labels: Iterable[str]) -> dict[str, str]:
    """One colour per label, stable across figures (labels sorted, tab20/tab20b colours, "Unassigned" grey).

    Parameters
    ----------
    labels
        All labels that can appear, from both species.

    Returns
    -------
    dict
        Label to hex colour.

    Examples
    --------
    >>> palette = speciesvi.pl.label_palette(["B cell", "T cell", "Unassigned"])
    """
    from matplotlib.colors import to_hex

    names = sorted({str(label) for label in labels} - {"Unassigned"})
    colors = list(plt.get_cmap("tab20").colors) + list(plt.get_cmap("tab20b").colors)
    palette = {name: to_hex(colors[i % len(colors)]) for i, name in enumerate(names)}
    palette["Unassigned"] = "#bdbdbd"
    return palette


def _finish(fig, save: str | Path | None, show: bool | None):
    if save is not None:
        fig.savefig(save, dpi=150, bbox_inches="tight")
    if show:
        plt.show()


def joint_embedding(
    coordinates: np.ndarray,
    species: Iterable[str],
    labels: Iterable[str] | None = None,
    *,
    context_name: str = "context",
    target_name: str = "target",
    title: str = "Joint embedding",
    point_size: float = 4.0,
    ax: Axes | None = None,
    save: str | Path | None = None,
    show: bool | None = None,
) -> Axes | np.ndarray:
    """Scatter both species' cells on one 2D embedding, coloured by species and, if given, by label.

    Parameters
    ----------
    coordinates
        ``(n_cells, 2)`` embedding of the concatenated cells (e.g. a UMAP of the aligned latent space).
    species
        Species name of each cell (``context_name`` or ``target_name``).
    labels
        Label of each cell; adds a second panel with one shared label palette.
    context_name, target_name
        Names of the two species as they appear in ``species``.
    title
        Figure title.
    point_size
        Marker size.
    ax
        Axes to draw the species panel on (only without ``labels``).
    save
        File to write the figure to.
    show
        Show the figure.

    Returns
    -------
    matplotlib.axes.Axes or numpy.ndarray
        The axes (one, or two with ``labels``).

    Examples
    --------
    >>> axes = speciesvi.pl.joint_embedding(umap, species, labels, context_name="mouse", target_name="human")
    """
    coordinates = np.asarray(coordinates)
    species = np.asarray(list(species), dtype=object)
    if coordinates.ndim != 2 or coordinates.shape[1] != 2 or len(species) != len(coordinates):
        raise ValueError("coordinates must be (n_cells, 2) with one species entry per cell.")
    if labels is not None and ax is not None:
        raise ValueError("ax= draws a single panel; leave labels=None or let the function make the figure.")
    n_panels = 1 if labels is None else 2
    if ax is None:
        fig, axes = plt.subplots(1, n_panels, figsize=(6.5 * n_panels, 5.5), squeeze=False)
        axes = axes[0]
    else:
        fig, axes = ax.figure, np.array([ax])
    order = np.random.default_rng(0).permutation(len(species))  # neither species hides the other
    colors = {context_name: SPECIES_COLORS["context"], target_name: SPECIES_COLORS["target"]}
    axes[0].scatter(*coordinates[order].T, s=point_size, c=[colors.get(s, "#777777") for s in species[order]], lw=0)
    for name, color in colors.items():
        axes[0].scatter([], [], s=30, c=color, label=f"{name} ({(species == name).sum():,} cells)")
    axes[0].legend(loc="best", frameon=False, fontsize=8)
    axes[0].set_title("Species")
    if labels is not None:
        labels = pd.Series(list(labels), dtype=str).to_numpy()
        palette = label_palette(labels)
        axes[1].scatter(*coordinates[order].T, s=point_size, c=[palette[label] for label in labels[order]], lw=0)
        for label in sorted(set(labels)):
            axes[1].scatter([], [], s=30, c=palette[label], label=label)
        axes[1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=8)
        axes[1].set_title("Cell type")
    for axis in axes:
        axis.set_xlabel("UMAP 1")
        axis.set_ylabel("UMAP 2")
        axis.set_xticks([])
        axis.set_yticks([])
    fig.suptitle(title)
    _finish(fig, save, show)
    return axes[0] if n_panels == 1 else axes
