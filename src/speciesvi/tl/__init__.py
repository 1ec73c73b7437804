"""Tools that work on results: label evaluation, majority votes, histogram modes, pseudo-bulk fold changes."""

from ._evaluate import LabelEvaluation, evaluate_labels
from ._labels import HETEROGENEOUS, UNASSIGNED, histogram_mode, majority_voting, vote
from ._pseudobulk import lfc_agreement, pseudobulk_lfc

__all__ = [
    "HETEROGENEOUS",
    "UNASSIGNED",
    "LabelEvaluation",
    "evaluate_labels",
    "histogram_mode",
    "lfc_agreement",
    "majority_voting",
    "pseudobulk_lfc",
    "vote",
]
