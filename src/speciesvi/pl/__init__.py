"""Plots of speciesvi results (drawn from AnnData and DataFrames, not from networks)."""

from ._checks import lfc_vs_pseudobulk, training_history
from ._confusion import confusion_heatmap, similarity_heatmap
from ._dotplot import transfer_dotplot
from ._embedding import joint_embedding, label_palette
from ._gene_sets import gene_set_lfc
from ._lfc import lfc_probability
from ._transfer import cell_similarity, transfer_accuracy

__all__ = [
    "cell_similarity",
    "confusion_heatmap",
    "gene_set_lfc",
    "joint_embedding",
    "label_palette",
    "lfc_probability",
    "lfc_vs_pseudobulk",
    "similarity_heatmap",
    "training_history",
    "transfer_accuracy",
    "transfer_dotplot",
]
