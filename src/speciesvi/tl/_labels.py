"""Label helpers: top-k majority votes, cluster-level majority voting and histogram modes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

UNASSIGNED = "Unassigned"
HETEROGENEOUS = "Heterogeneous"


def vote(neighbor_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Majority label of every row of a ``(n_cells, k)`` array of neighbour labels, and its vote share.

    Ties go to the label that occurs first in the row (the more similar neighbour when rows are sorted
    by similarity). Missing labels (``None``/NaN) do not vote but count in the share's denominator; a
    row without any label gets "Unassigned" and share 0.

    Parameters
    ----------
    neighbor_labels
        Labels of each cell's ``k`` neighbours, most similar first.

    Returns
    -------
    labels
        ``(n_cells,)`` winning label of each row (object array).
    share
        ``(n_cells,)`` fraction of the ``k`` votes the winner got.

    Examples
    --------
    >>> labels, share = vote(np.array([["a", "b", "b"], ["c", "a", "b"]]))
    >>> labels.tolist(), share.round(2).tolist()
    (['b', 'c'], [0.67, 0.33])
    """
    neighbor_labels = np.asarray(neighbor_labels, dtype=object)
    if neighbor_labels.ndim != 2 or neighbor_labels.shape[1] == 0:
        raise ValueError("neighbor_labels must be a non-empty (n_cells, k) array.")
    n, k = neighbor_labels.shape
    codes, categories = pd.factorize(neighbor_labels.reshape(-1), use_na_sentinel=True)
    n_categories = max(len(categories), 1)
    valid = codes >= 0
    rows = np.repeat(np.arange(n), k)
    slots = np.tile(np.arange(k), n)
    counts = np.zeros((n, n_categories), dtype=np.int64)
    np.add.at(counts, (rows[valid], codes[valid]), 1)
    # first position of each label in its row breaks ties towards the more similar neighbour
    first = np.full((n, n_categories), k, dtype=np.int64)
    np.minimum.at(first, (rows[valid], codes[valid]), slots[valid])
    best = (counts * (k + 1) - first).argmax(axis=1)  # most votes; among ties the smallest first position
    share = counts[np.arange(n), best] / k
    labels = np.asarray(categories, dtype=object)[best] if len(categories) else np.full(n, UNASSIGNED, dtype=object)
    labels = np.where(share > 0, labels, UNASSIGNED).astype(object)
    return labels, share


def label_order(labels: Sequence | np.ndarray | pd.Series) -> list[str]:
    """The label categories of a column, as strings: its categorical order, else sorted; missing labels left out.

    Examples
    --------
    >>> label_order(pd.Series(["b", None, "a", "b"]))
    ['a', 'b']
    >>> label_order(pd.Categorical(["b", "a"], categories=["b", "a", "c"]))
    ['b', 'a', 'c']
    """
    if isinstance(labels, pd.Series) and isinstance(labels.dtype, pd.CategoricalDtype):
        labels = labels.array
    if isinstance(labels, pd.Categorical):
        return [str(c) for c in labels.categories]
    values = pd.Series(np.asarray(labels, dtype=object).reshape(-1)).dropna()
    return sorted({str(v) for v in values})


def vote_shares(neighbor_labels: np.ndarray, categories: Sequence[str]) -> np.ndarray:
    """Share of each cell's ``k`` neighbours that carry each label: the per-label counterpart of :func:`vote`.

    Missing labels (``None``/NaN) and labels outside ``categories`` count in the denominator ``k`` but
    for no column, as in :func:`vote`; the share of the label :func:`vote` picks is its vote share, and
    rows sum to 1 when every neighbour has a label in ``categories``.

    Parameters
    ----------
    neighbor_labels
        ``(n_cells, k)`` labels of each cell's neighbours.
    categories
        The labels, in the order of the columns.

    Returns
    -------
    numpy.ndarray
        ``(n_cells, len(categories))`` float32 vote shares.

    Examples
    --------
    >>> vote_shares(np.array([["a", "b", "b", "b"], ["c", None, "a", "a"]], dtype=object), ["a", "b", "c"])
    array([[0.25, 0.75, 0.  ],
           [0.5 , 0.  , 0.25]], dtype=float32)
    """
    neighbor_labels = np.asarray(neighbor_labels, dtype=object)
    if neighbor_labels.ndim != 2 or neighbor_labels.shape[1] == 0:
        raise ValueError("neighbor_labels must be a non-empty (n_cells, k) array.")
    categories = [str(c) for c in categories]
    if len(set(categories)) != len(categories):
        raise ValueError("categories must not repeat a label; pass each label once.")
    n, k = neighbor_labels.shape
    flat = pd.Series(neighbor_labels.reshape(-1))
    codes = pd.Categorical(flat.where(flat.isna(), flat.astype(str)), categories=categories).codes.astype(np.int64)
    valid = codes >= 0
    counts = np.zeros((n, len(categories)), dtype=np.float64)
    np.add.at(counts, (np.repeat(np.arange(n), k)[valid], codes[valid]), 1.0)
    return (counts / k).astype(np.float32)


def prob_match(
    probabilities: np.ndarray, categories: Sequence[str], p_thres: float = 0.5, sep: str = "|"
) -> np.ndarray:
    """CellTypist's probability match: every label whose probability reaches ``p_thres``, joined by ``sep``.

    Labels are joined in the order of ``categories``; a cell with no label at ``p_thres`` or above is
    "Unassigned".

    Parameters
    ----------
    probabilities
        ``(n_cells, len(categories))`` per-label probabilities (e.g. :func:`vote_shares`).
    categories
        The labels of the columns.
    p_thres
        Smallest probability of a label a cell is given, in ``(0, 1)``.
    sep
        Separator of the labels of a cell.

    Returns
    -------
    numpy.ndarray
        ``(n_cells,)`` object array of labels.

    Examples
    --------
    >>> prob_match(np.array([[0.6, 0.4, 0.0], [0.3, 0.3, 0.3]]), ["a", "b", "c"], p_thres=0.4).tolist()
    ['a|b', 'Unassigned']
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    categories = np.asarray([str(c) for c in categories], dtype=object)
    if probabilities.ndim != 2 or probabilities.shape[1] != categories.shape[0]:
        raise ValueError(
            f"probabilities must be (n_cells, {categories.shape[0]}) with one column per category, got shape "
            f"{probabilities.shape}."
        )
    check_p_thres(p_thres)
    hits = probabilities >= p_thres
    labels = np.array([sep.join(categories[row]) for row in hits], dtype=object)
    labels[~hits.any(axis=1)] = UNASSIGNED
    return labels


def check_p_thres(p_thres: float) -> float:
    """``p_thres`` as a float, or a ValueError that says which values are allowed."""
    if isinstance(p_thres, bool) or not isinstance(p_thres, int | float | np.floating) or not 0.0 < p_thres < 1.0:
        raise ValueError(f"p_thres must be a number in (0, 1), e.g. 0.5 (CellTypist's default); got {p_thres!r}.")
    return float(p_thres)


def majority_voting(
    labels: Sequence | np.ndarray | pd.Series,
    clusters: Sequence | np.ndarray | pd.Series,
    min_prop: float = 0.0,
) -> np.ndarray:
    """CellTypist-style majority voting: every cell gets the most frequent label of its cluster.

    Parameters
    ----------
    labels
        Per-cell labels (may include "Unassigned").
    clusters
        Per-cell cluster ids (e.g. Leiden clusters).
    min_prop
        A cluster whose most frequent label covers less than this fraction of its cells is labelled
        "Heterogeneous".

    Returns
    -------
    numpy.ndarray
        The cluster-level label of every cell (object array).

    Examples
    --------
    >>> majority_voting(["a", "a", "b", "c"], [0, 0, 0, 1]).tolist()
    ['a', 'a', 'a', 'c']
    """
    if not 0.0 <= min_prop <= 1.0:
        raise ValueError(f"min_prop must be in [0, 1], got {min_prop}.")
    labels, clusters = np.asarray(labels, dtype=object), np.asarray(clusters, dtype=object)
    if labels.ndim != 1 or clusters.ndim != 1 or labels.shape != clusters.shape:
        raise ValueError(
            f"labels and clusters must be one-dimensional with one entry per cell, got shapes {labels.shape} and "
            f"{clusters.shape}."
        )
    frame = pd.DataFrame({"label": labels, "cluster": clusters})
    if frame["cluster"].isna().any():
        raise ValueError("The clustering has missing values; every cell needs a cluster.")
    counts = frame.groupby(["cluster", "label"], sort=True, observed=True).size()
    winners = {}
    for cluster, group in counts.groupby(level=0, sort=False):
        group = group.droplevel(0)
        top = group.idxmax()
        winners[cluster] = top if group.max() / group.sum() >= min_prop else HETEROGENEOUS
    return frame["cluster"].map(winners).to_numpy(dtype=object)


def histogram_mode(values: np.ndarray, bins: int | str = "auto") -> float:
    """Mid-point of the fullest histogram bin of ``values`` (NaN and infinite values are ignored).

    Parameters
    ----------
    values
        Samples of a distribution.
    bins
        Passed to :func:`numpy.histogram_bin_edges` (``"auto"``: the larger of the Sturges and
        Freedman-Diaconis bin counts).

    Returns
    -------
    float
        The modal value (NaN for no finite values).

    Examples
    --------
    >>> histogram_mode(np.array([0.0, 1.0, 1.1, 1.2, 5.0]), bins=5)
    1.5
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan")
    if values.min() == values.max():
        return float(values[0])
    try:
        counts, edges = np.histogram(values, bins=bins)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"bins must be a positive integer or a numpy.histogram_bin_edges estimator name ('auto', 'fd', ...), "
            f"got {bins!r} ({error})."
        ) from error
    best = int(np.argmax(counts))
    return float((edges[best] + edges[best + 1]) / 2)


def anchor_fallback(
    labels: np.ndarray,
    data_level_labels: np.ndarray,
    anchors: np.ndarray,
    min_agreement: float,
) -> tuple[np.ndarray, dict[str, float]]:
    """Which cells should keep their data-level label because the model's labels fail on the anchor cells.

    The anchors are the cells whose data-level label is the most reliable (the aligned cells, lowest
    agreement score). For every data-level label of the anchors, the share of its anchors to which the
    model gives the same label is computed; a label below ``min_agreement`` is one the model cannot be
    trusted with, and every cell whose model label or data-level label is such a label is flagged.

    Parameters
    ----------
    labels
        ``(n_cells,)`` the model's labels.
    data_level_labels
        ``(n_cells,)`` the data-level labels.
    anchors
        ``(n_cells,)`` boolean mask of the anchor cells.
    min_agreement
        Smallest share of a label's anchors the model must label alike, in ``[0, 1]``.

    Returns
    -------
    use_data_level
        ``(n_cells,)`` boolean: cells that should take their data-level label.
    agreement
        Share of agreeing anchors per data-level label of the anchors.

    Examples
    --------
    >>> model = np.array(["a", "b", "b", "b"])
    >>> data = np.array(["a", "a", "b", "b"])
    >>> use, agreement = anchor_fallback(model, data, np.array([True, True, True, False]), 0.9)
    >>> use.tolist(), agreement
    ([True, True, False, False], {'a': 0.5, 'b': 1.0})
    """
    labels = np.asarray(labels, dtype=object)
    data_level_labels = np.asarray(data_level_labels, dtype=object)
    anchors = np.asarray(anchors, dtype=bool)
    if not labels.shape == data_level_labels.shape == anchors.shape or labels.ndim != 1:
        raise ValueError("labels, data_level_labels and anchors must be 1-D arrays of the same length.")
    if not 0.0 <= min_agreement <= 1.0:
        raise ValueError(f"min_agreement must be in [0, 1], got {min_agreement}.")
    frame = pd.DataFrame({"data": data_level_labels[anchors], "same": labels[anchors] == data_level_labels[anchors]})
    agreement = {str(k): float(v) for k, v in frame.groupby("data", sort=True)["same"].mean().items()}
    failing = [label for label, share in agreement.items() if share < min_agreement]
    use_data_level = np.isin(labels.astype(str), failing) | np.isin(data_level_labels.astype(str), failing)
    return use_data_level, agreement


def leiden_clusters(z: np.ndarray) -> np.ndarray:
    """Leiden clusters of a latent space (15-nearest-neighbour graph, resolution 1)."""
    import anndata as ad
    import scanpy as sc

    tmp = ad.AnnData(obsm={"X_latent": np.asarray(z, dtype=np.float32)}, shape=(z.shape[0], 0))
    sc.pp.neighbors(tmp, use_rep="X_latent", random_state=0)
    try:
        sc.tl.leiden(tmp, flavor="igraph", n_iterations=2, directed=False, random_state=0)
    except ImportError as err:
        raise ValueError(
            "over_clustering='leiden' needs the igraph and leidenalg packages (pip install 'speciesvi[leiden]'); "
            "or pass an obs key / per-cell cluster ids."
        ) from err
    return tmp.obs["leiden"].astype(str).to_numpy(dtype=object)
