"""Tools that work on results: label evaluation, majority votes, histogram modes."""

from ._evaluate import LabelEvaluation, evaluate_labels
from ._labels import HETEROGENEOUS, UNASSIGNED, histogram_mode, majority_voting, vote

__all__ = [
    "HETEROGENEOUS",
    "UNASSIGNED",
    "LabelEvaluation",
    "evaluate_labels",
    "histogram_mode",
    "majority_voting",
    "vote",
]
