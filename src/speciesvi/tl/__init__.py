"""Array-in/array-out analysis, and tools on results.

Likelihood similarity, novelty, label transfer, cell-type similarity and homolog LFC; label evaluation, votes,
pseudo-bulk fold changes and gene-set summaries of the fold changes (GMT files).

The model methods (:meth:`speciesvi.TargetVI.transfer_labels`, ``cell_type_similarity``, ``homolog_lfc``) gather
the posteriors and networks these functions take.
"""

from ._cell_types import TypePairs, sample_type_pairs, type_similarity_table
from ._evaluate import LabelEvaluation, evaluate_labels
from ._gene_sets import GENE_SET_COLUMNS, gene_set_lfc
from ._gmt import read_gmt
from ._homolog_lfc import LFC_COLUMNS, Posteriors, cells_per_type, homologous_expression, lfc_table
from ._labels import (
    HETEROGENEOUS,
    UNASSIGNED,
    anchor_fallback,
    histogram_mode,
    label_order,
    leiden_clusters,
    majority_voting,
    prob_match,
    vote,
    vote_shares,
)
from ._novelty import NOVELTY_SDS, novelty_scores, novelty_to_p_known
from ._pseudobulk import lfc_agreement, pseudobulk_lfc
from ._results import CELL_TYPE_SIMILARITY_KEY, LFC_KEY, read_cell_type_similarity, read_homolog_lfc
from ._similarity import latent_neighbors, likelihood_similarity, sort_by_similarity
from ._transfer import (
    ANCHOR_AGREEMENT,
    CONFIDENT_DATA_LEVEL,
    TransferVote,
    anchored_vote,
    data_level_vote,
    keep_confident_data_level,
    transfer_table,
    transfer_votes,
    write_transfer,
)

__all__ = [
    "ANCHOR_AGREEMENT",
    "CELL_TYPE_SIMILARITY_KEY",
    "CONFIDENT_DATA_LEVEL",
    "GENE_SET_COLUMNS",
    "HETEROGENEOUS",
    "LFC_COLUMNS",
    "LFC_KEY",
    "NOVELTY_SDS",
    "UNASSIGNED",
    "LabelEvaluation",
    "Posteriors",
    "TransferVote",
    "TypePairs",
    "anchor_fallback",
    "anchored_vote",
    "cells_per_type",
    "data_level_vote",
    "evaluate_labels",
    "gene_set_lfc",
    "histogram_mode",
    "homologous_expression",
    "keep_confident_data_level",
    "label_order",
    "latent_neighbors",
    "leiden_clusters",
    "lfc_agreement",
    "lfc_table",
    "likelihood_similarity",
    "majority_voting",
    "novelty_scores",
    "novelty_to_p_known",
    "prob_match",
    "pseudobulk_lfc",
    "read_cell_type_similarity",
    "read_gmt",
    "read_homolog_lfc",
    "sample_type_pairs",
    "sort_by_similarity",
    "transfer_table",
    "transfer_votes",
    "type_similarity_table",
    "vote",
    "vote_shares",
    "write_transfer",
]
