"""Evaluation of transferred labels against known target labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

#: Labels written by label transfer that are not context labels.
NON_LABELS = ("Unassigned", "Heterogeneous")


class LabelEvaluation(NamedTuple):
    """Result of :func:`evaluate_labels`; unpacks as ``confusion, balanced_accuracy, recall``."""

    confusion: pd.DataFrame
    """Percent of the cells of each true label (rows, sorted) given each predicted label (columns)."""
    balanced_accuracy: float
    """Mean recall over the evaluated (shared) labels; NaN when there is none."""
    recall: pd.Series
    """Recall of every evaluated label (share of its cells predicted as that label)."""


def _as_str(values: Sequence | pd.Series | np.ndarray) -> np.ndarray:
    return pd.Series(np.asarray(values, dtype=object)).astype(str).to_numpy(dtype=object)


def evaluate_labels(
    true: Sequence | pd.Series | np.ndarray,
    predicted: Sequence | pd.Series | np.ndarray,
    reference: Sequence | pd.Series | np.ndarray | None = None,
    shared_only: bool = True,
    min_cells: int = 1,
) -> LabelEvaluation:
    """Confusion table, balanced accuracy and per-label recall of transferred labels.

    Parameters
    ----------
    true
        Known labels of the target cells.
    predicted
        Transferred labels of the same cells ("Unassigned" and "Heterogeneous" count as wrong).
    reference
        The context cells' labels, one per context cell: defines which labels the species share. Without
        it, the labels that occur in ``predicted`` are taken as the context's.
    shared_only
        Evaluate only the true labels that the context also has (cells of types the context lacks cannot be
        labelled correctly). ``False`` evaluates every true label.
    min_cells
        Evaluate only labels with at least this many target cells and (with ``reference``) context cells.

    Returns
    -------
    LabelEvaluation
        ``(confusion, balanced_accuracy, recall)``: the confusion table in percent of each true label's
        cells (rows: true labels, columns: predicted labels), the mean recall over the evaluated labels and
        the recall of each.

    Examples
    --------
    >>> from speciesvi.tl import evaluate_labels
    >>> confusion, bacc, recall = evaluate_labels(["a", "a", "b", "c"], ["a", "b", "b", "b"], reference=["a", "b"])
    >>> bacc
    0.75
    >>> float(confusion.loc["a", "b"])
    50.0
    """
    true = _as_str(true)
    predicted = _as_str(predicted)
    if true.shape != predicted.shape:
        raise ValueError(f"true and predicted must have the same length, got {true.shape[0]} and {predicted.shape[0]}.")
    if min_cells < 1:
        raise ValueError(f"min_cells must be at least 1, got {min_cells}.")
    true_counts = pd.Series(true).value_counts()
    candidates = set(true_counts.index[true_counts >= min_cells])
    if shared_only:
        if reference is None:
            known = set(predicted) - set(NON_LABELS)
        else:
            reference_counts = pd.Series(_as_str(reference)).value_counts()
            known = set(reference_counts.index[reference_counts >= min_cells])
        candidates &= known
    labels = sorted(candidates)
    recall = pd.Series(
        {label: float(np.mean(predicted[true == label] == label)) for label in labels}, name="recall", dtype=float
    )
    recall.index.name = "label"
    balanced_accuracy = float(recall.mean()) if len(recall) else float("nan")

    table = pd.crosstab(pd.Series(true, name="true"), pd.Series(predicted, name="predicted"))
    columns = sorted(c for c in table.columns if c not in NON_LABELS) + [c for c in NON_LABELS if c in table.columns]
    table = table[columns]
    confusion = table.div(table.sum(axis=1), axis=0) * 100.0
    return LabelEvaluation(confusion=confusion, balanced_accuracy=balanced_accuracy, recall=recall)
