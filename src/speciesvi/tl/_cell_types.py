"""Cell-type similarity: which context cells each sampled target cell is compared with, and the type table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from ._labels import histogram_mode

#: Above this many random keys, context cells are drawn cell by cell instead of in one array.
MAX_SAMPLING_KEYS = 5e7
Scale = Literal["none", "max", "min_max"]


@dataclass
class TypePairs:
    """Sampled target cells, the context cells each is compared with, and the blocks of context types."""

    cells: np.ndarray
    candidates: np.ndarray
    bounds: np.ndarray
    target_types: list[str]
    context_types: list[str]


def sample_type_pairs(
    target_labels: np.ndarray,
    context_labels: np.ndarray,
    n_target: int,
    n_context: int,
    rng: np.random.Generator,
) -> TypePairs:
    """Sample target cells of every type, and context cells of every type for each of them.

    Up to ``n_target`` cells of every target type; for each, an independent sample of up to ``n_context`` cells
    of every context type.

    Parameters
    ----------
    target_labels
        Type of every target cell; ``None`` for cells left out.
    context_labels
        Type of every context cell; ``None`` for cells without a label.
    n_target, n_context
        Cells sampled per target type, and per context type for every sampled target cell.
    rng
        Random generator.

    Returns
    -------
    TypePairs
        ``candidates[:, bounds[c]:bounds[c + 1]]`` are the sampled cells of ``context_types[c]``.

    Examples
    --------
    >>> pairs = sample_type_pairs(
    ...     np.array(["a", "a", None], dtype=object), np.array(["x", "y", "y"]), 5, 1, np.random.default_rng(0)
    ... )
    >>> pairs.candidates.shape, pairs.context_types
    ((2, 2), ['x', 'y'])
    """
    usable = np.array([label is not None for label in target_labels], dtype=bool)
    target_types = sorted(pd.unique(target_labels[usable]))
    context_types = sorted(t for t in pd.unique(context_labels) if t is not None)
    if not target_types or not context_types:
        raise ValueError("cell_type_similarity needs labelled target and context cells.")
    members = [np.flatnonzero(context_labels == t) for t in context_types]
    widths = [min(n_context, m.size) for m in members]
    sampled = [
        rng.choice(idx, size=min(n_target, idx.size), replace=False)
        for idx in (np.flatnonzero(usable & (target_labels == t)) for t in target_types)
    ]
    cells = np.concatenate(sampled)
    candidates = np.empty((cells.size, sum(widths)), dtype=np.int64)
    start = 0
    for m, w in zip(members, widths, strict=True):
        # an independent sample of w cells of this context type for every target cell
        if m.size * cells.size <= MAX_SAMPLING_KEYS:
            keys = rng.random((cells.size, m.size))
            candidates[:, start : start + w] = m[np.argpartition(keys, w - 1, axis=1)[:, :w]]
        else:
            for row in range(cells.size):
                candidates[row, start : start + w] = rng.choice(m, size=w, replace=False)
        start += w
    return TypePairs(cells, candidates, np.concatenate([[0], np.cumsum(widths)]), target_types, context_types)


def type_similarity_table(
    similarities: np.ndarray,
    pairs: TypePairs,
    target_labels: np.ndarray,
    scale: Scale = "none",
    target_name: str | None = None,
    context_name: str | None = None,
) -> pd.DataFrame:
    """Target types x context types: the mode (histogram peak) of the similarities of each pair of types.

    Parameters
    ----------
    similarities
        ``(len(pairs.cells), n_candidates)`` similarities of the sampled cells to ``pairs.candidates``.
    pairs
        The output of :func:`sample_type_pairs`.
    target_labels
        Type of every target cell (indexed by ``pairs.cells``).
    scale
        ``"none"`` (nats, lower = more similar), ``"min_max"`` (per row, 1 for the most similar context type,
        0 for the least) or ``"max"`` (per row, ``1 - s / max``).
    target_name, context_name
        Names of the row and column index.

    Returns
    -------
    pandas.DataFrame
        Target types (rows) x context types (columns).
    """
    if scale not in ("none", "max", "min_max"):
        raise ValueError(f"scale must be 'none', 'max' or 'min_max', not {scale!r}.")
    types_of_cells = target_labels[pairs.cells]
    bounds = pairs.bounds
    table = pd.DataFrame(
        [
            [
                histogram_mode(similarities[types_of_cells == t, bounds[c] : bounds[c + 1]])
                for c in range(len(pairs.context_types))
            ]
            for t in pairs.target_types
        ],
        index=pd.Index(pairs.target_types, name=target_name),
        columns=pd.Index(pairs.context_types, name=context_name),
    )
    if scale == "min_max":
        low, high = table.min(axis=1), table.max(axis=1)
        table = table.rsub(high, axis=0).div((high - low).replace(0, np.nan), axis=0)
    elif scale == "max":
        table = 1 - table.div(table.max(axis=1).replace(0, np.nan), axis=0)
    return table
