"""Label transfer from ranked context candidates: the vote, the anchor check, "Unassigned" and the AnnData record."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np
import pandas as pd

from ._labels import UNASSIGNED, anchor_fallback, check_p_thres, majority_voting, prob_match, vote, vote_shares

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

#: Where the candidates of ``TargetVI.transfer_labels`` come from.
CandidateSource = Literal["data_level", "latent"]
#: Share of a label's anchor cells the similarity vote must label alike, or that label falls back to the
#: data-level vote (``transfer_labels(data_level_fallback=...)``).
ANCHOR_AGREEMENT = 0.9
#: Data-level vote share from which a cell keeps its data-level label whatever the similarity vote says
#: (``transfer_labels(keep_data_level=...)``).
CONFIDENT_DATA_LEVEL = 0.9
#: How ``TargetVI.transfer_labels`` turns vote shares into labels (CellTypist's ``mode``).
MatchMode = Literal["best_match", "prob_match"]
MATCH_MODES = ("best_match", "prob_match")


def data_level_vote(context_labels: np.ndarray, data_level_voters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Majority label and vote share of the data-level neighbours (``-1``, no neighbour, does not vote).

    Examples
    --------
    >>> data_level_vote(np.array(["a", "b"], dtype=object), np.array([[0, 0, 1], [1, -1, -1]]))[0].tolist()
    ['a', 'b']
    """
    voters = np.asarray(data_level_voters, dtype=np.int64)
    labels = np.asarray(context_labels, dtype=object)[np.clip(voters, 0, None)]
    return vote(np.where(voters >= 0, labels, None))


def keep_confident_data_level(
    labels: np.ndarray,
    shares: np.ndarray,
    data_level_labels: np.ndarray,
    data_level_shares: np.ndarray,
    min_share: float | None = CONFIDENT_DATA_LEVEL,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cells whose data-level vote is near-unanimous keep the data-level label.

    The similarity re-ranking is there to settle the cells whose data-level neighbours disagree (PP
    against D cells, doublets, thin types); where at least ``min_share`` of them agree, the data give the
    label and re-ranking can only add the alignment's training noise to it.

    Parameters
    ----------
    labels, shares
        ``(n,)`` the similarity vote (after the anchor check) and its vote share.
    data_level_labels, data_level_shares
        ``(n,)`` the data-level vote (:func:`data_level_vote`) and its vote share.
    min_share
        Data-level vote share from which the data-level label is kept; ``None`` keeps every similarity label.

    Returns
    -------
    labels, shares
        The labels and vote shares after the rule.
    kept
        ``(n,)`` bool, the cells whose similarity label was replaced by a different data-level label.

    Examples
    --------
    >>> labels, _, kept = keep_confident_data_level(
    ...     np.array(["a", "a"]), np.ones(2), np.array(["b", "b"]), np.array([0.96, 0.6]), 0.9
    ... )
    >>> labels.tolist(), kept.tolist()
    (['b', 'a'], [True, False])
    """
    labels = np.asarray(labels, dtype=object)
    if min_share is None:
        return labels, np.asarray(shares), np.zeros(labels.shape[0], dtype=bool)
    if not 0.0 <= min_share <= 1.0:
        raise ValueError(f"min_share must be in [0, 1] or None, got {min_share}.")
    data_level_labels = np.asarray(data_level_labels, dtype=object)
    confident = _confident(data_level_labels, data_level_shares, min_share)
    kept = confident & (data_level_labels != labels)
    return (
        np.where(confident, data_level_labels, labels).astype(object),
        np.where(confident, data_level_shares, shares),
        kept,
    )


def _confident(data_level_labels: np.ndarray, data_level_shares: np.ndarray, min_share: float | None) -> np.ndarray:
    """Cells whose data-level label stands under :func:`keep_confident_data_level`."""
    data_level_labels = np.asarray(data_level_labels, dtype=object)
    if min_share is None:
        return np.zeros(data_level_labels.shape[0], dtype=bool)
    return (np.asarray(data_level_shares) >= min_share) & (data_level_labels != UNASSIGNED)


def anchored_vote(
    context_labels: np.ndarray,
    voters: np.ndarray,
    data_level_voters: np.ndarray | None = None,
    anchors: np.ndarray | None = None,
    min_agreement: float | None = ANCHOR_AGREEMENT,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Majority vote of the most similar context cells, with the anchor check.

    Every target cell takes the majority label of its ``voters``. With ``min_agreement``, labels whose anchor
    cells (``anchors``: the cells with the most reliable data-level labels) the vote gives that label less
    often than ``min_agreement`` fall back, for every cell whose vote or data-level label is such a label, to
    the vote of ``data_level_voters`` (see :func:`speciesvi.tl._labels.anchor_fallback`).

    Parameters
    ----------
    context_labels
        Label of every context cell (``None`` for missing labels, which do not vote).
    voters
        ``(n, k)`` context cells that vote for each target cell, most similar first.
    data_level_voters
        ``(n, k)`` data-level neighbours of each target cell, nearest first (needed with ``min_agreement``).
    anchors
        ``(n,)`` bool, the anchor cells (needed with ``min_agreement``).
    min_agreement
        Smallest share of a label's anchors the vote must give that label; ``None`` skips the check.

    Returns
    -------
    labels, shares
        ``(n,)`` winning label and its vote share.
    record
        ``anchor_agreement`` per label, the ``data_level_labels`` that fell back and ``n_data_level`` cells;
        empty without the check.

    Examples
    --------
    >>> labels = np.array(["a", "b", "b"], dtype=object)
    >>> anchored_vote(labels, np.array([[1, 2], [0, 1]]), min_agreement=None)[0].tolist()
    ['b', 'a']
    """
    label, share, record, _ = _anchored_vote(context_labels, voters, data_level_voters, anchors, min_agreement)
    return label, share, record


def _anchored_vote(
    context_labels: np.ndarray,
    voters: np.ndarray,
    data_level_voters: np.ndarray | None,
    anchors: np.ndarray | None,
    min_agreement: float | None,
) -> tuple[np.ndarray, np.ndarray, dict, np.ndarray]:
    """:func:`anchored_vote`, plus the ``(n,)`` bool mask of the cells that took the data-level vote."""
    label, share = vote(context_labels[voters])
    if min_agreement is None:
        return label, share, {}, np.zeros(label.shape[0], dtype=bool)
    if data_level_voters is None or anchors is None:
        raise ValueError("The anchor check needs data_level_voters and anchors (or min_agreement=None).")
    data_label, data_share = data_level_vote(context_labels, data_level_voters)
    use_data_level, agreement = anchor_fallback(label, data_label, np.asarray(anchors, dtype=bool), min_agreement)
    record = {
        "anchor_agreement": agreement,
        "data_level_labels": sorted(k for k, v in agreement.items() if v < min_agreement),
        "n_data_level": int(use_data_level.sum()),
    }
    if use_data_level.any():
        logger.info(
            "transfer_labels: the similarity vote disagrees with the data-level label of the anchor cells of %s; "
            "their %d cells keep the data-level vote.",
            record["data_level_labels"],
            record["n_data_level"],
        )
    label = np.where(use_data_level, data_label, label).astype(object)
    return label, np.where(use_data_level, data_share, share), record, use_data_level


def check_mode(mode: str) -> MatchMode:
    """``mode`` as ``"best_match"`` or ``"prob_match"`` (CellTypist's spellings with a space are accepted)."""
    normalised = mode.replace(" ", "_") if isinstance(mode, str) else mode
    if normalised not in MATCH_MODES:
        raise ValueError(
            f"mode must be 'best_match' (the label with the largest vote share) or 'prob_match' (every label "
            f"whose vote share reaches p_thres), got {mode!r}."
        )
    return normalised


class TransferVote(NamedTuple):
    """The vote of one labels key in :func:`transfer_votes`."""

    #: ``(n,)`` final labels (best match, or prob match joined by "|").
    labels: np.ndarray
    #: ``(n,)`` vote share of the best-matching label.
    shares: np.ndarray
    #: ``(n,)`` the similarity vote after the anchor check, before confident data-level labels stand.
    similarity_labels: np.ndarray
    #: The anchor check's record (:func:`anchored_vote`).
    check: dict
    #: Cells whose similarity label a confident data-level label replaced.
    n_kept: int
    #: ``(n, n_categories)`` float32 vote shares of every label among the cell's final voters.
    probabilities: np.ndarray
    #: ``(n,)`` bool: the final voters are the data-level neighbours (anchor check or confident data level).
    data_level: np.ndarray


def transfer_votes(
    context_labels: np.ndarray,
    categories: list[str],
    voters: np.ndarray,
    data_level_voters: np.ndarray,
    anchors: np.ndarray | None = None,
    min_agreement: float | None = ANCHOR_AGREEMENT,
    keep_data_level: float | None = CONFIDENT_DATA_LEVEL,
    mode: MatchMode = "best_match",
    p_thres: float = 0.5,
) -> TransferVote:
    """One labels key of a label transfer: the vote, the anchor check, confident data-level labels, probabilities.

    The labels and vote shares are those of :func:`anchored_vote` followed by
    :func:`keep_confident_data_level`. The probabilities are the vote shares (:func:`~speciesvi.tl.vote_shares`)
    of every label among the voters that gave the cell its label: the ``data_level_voters`` for the cells
    whose label the anchor check or a confident data-level vote decided, the ``voters`` otherwise; so the
    column of a cell's best-match label holds its vote share. With ``mode="prob_match"``, a cell gets every
    label whose probability reaches ``p_thres``, joined by "|" (:func:`~speciesvi.tl.prob_match`).

    Parameters
    ----------
    context_labels
        Label of every context cell (``None`` for missing labels, which do not vote).
    categories
        The context labels, in the order of the probability columns.
    voters
        ``(n, k)`` context cells most similar to each target cell, most similar first.
    data_level_voters
        ``(n, k)`` data-level neighbours of each target cell, nearest first (``-1``: none).
    anchors, min_agreement
        The anchor check, as in :func:`anchored_vote` (``min_agreement=None`` skips it).
    keep_data_level
        As ``min_share`` of :func:`keep_confident_data_level`.
    mode, p_thres
        ``"best_match"``: the label with the largest vote share; ``"prob_match"``: every label whose vote
        share is at least ``p_thres``, or "Unassigned".

    Returns
    -------
    TransferVote
        Labels, vote shares, probabilities and the records of the rules.

    Examples
    --------
    >>> labels = np.array(["a", "b", "b"], dtype=object)
    >>> result = transfer_votes(labels, ["a", "b"], np.array([[1, 2, 0]]), np.array([[0, 0, 1]]), min_agreement=None)
    >>> result.labels.tolist(), result.probabilities.round(2)
    (['b'], array([[0.33, 0.67]], dtype=float32))
    """
    mode = check_mode(mode)
    p_thres = check_p_thres(p_thres)
    context_labels = np.asarray(context_labels, dtype=object)
    data_level_voters = np.asarray(data_level_voters, dtype=np.int64)
    label, share, check, fallback = _anchored_vote(context_labels, voters, data_level_voters, anchors, min_agreement)
    data_label, data_share = data_level_vote(context_labels, data_level_voters)
    final, final_share, kept = keep_confident_data_level(label, share, data_label, data_share, keep_data_level)
    from_data_level = fallback | _confident(data_label, data_share, keep_data_level)
    data_level_labels = np.where(data_level_voters >= 0, context_labels[np.clip(data_level_voters, 0, None)], None)
    probabilities = np.where(
        from_data_level[:, None],
        vote_shares(data_level_labels, categories),
        vote_shares(context_labels[voters], categories),
    )
    if mode == "prob_match":
        final = prob_match(probabilities, categories, p_thres)
    return TransferVote(final, final_share, label, check, int(kept.sum()), probabilities, from_data_level)


def transfer_table(
    votes: dict[str, tuple[np.ndarray, np.ndarray]],
    p_known: np.ndarray,
    novelty: np.ndarray,
    best_similarity: np.ndarray,
    obs_names: pd.Index,
    unassigned_threshold: float | None = 0.5,
    clusters: np.ndarray | None = None,
    min_prop: float = 0.0,
) -> pd.DataFrame:
    """The per-cell result of a label transfer.

    Parameters
    ----------
    votes
        Per labels key, the voted label and its vote share of every cell.
    p_known
        Probability that a cell belongs to a context type (:func:`speciesvi.tl._novelty.novelty_to_p_known`).
    novelty, best_similarity
        Reported as they are.
    obs_names
        Index of the table.
    unassigned_threshold
        Cells with ``p_known`` below it get "Unassigned"; ``None`` labels every cell.
    clusters
        Per-cell clusters for majority voting, or ``None``.
    min_prop
        Majority voting: clusters whose top label has a smaller share are "Heterogeneous".

    Returns
    -------
    pandas.DataFrame
        With one labels key: ``label``, ``confidence`` (vote share x ``p_known``), ``vote_share`` (and
        ``majority_voting``); with several, the same columns suffixed by ``_{key}``; then ``p_known``,
        ``novelty`` and ``best_similarity``.

    Examples
    --------
    >>> votes = {"type": (np.array(["a", "b"], dtype=object), np.array([1.0, 0.6]))}
    >>> table = transfer_table(votes, np.array([0.9, 0.1]), np.zeros(2), np.zeros(2), pd.Index(["c1", "c2"]))
    >>> table["label"].tolist()
    ['a', 'Unassigned']
    """
    unassigned = (
        np.zeros(p_known.shape[0], dtype=bool) if unassigned_threshold is None else p_known < unassigned_threshold
    )
    table = pd.DataFrame(index=obs_names)
    for key, (label, share) in votes.items():
        label = np.where(unassigned, UNASSIGNED, label).astype(object)
        suffix = "" if len(votes) == 1 else f"_{key}"
        table[f"label{suffix}"] = pd.Categorical(label)
        table[f"confidence{suffix}"] = share * p_known
        table[f"vote_share{suffix}"] = share
        if clusters is not None:
            table[f"majority_voting{suffix}"] = pd.Categorical(majority_voting(label, clusters, min_prop=min_prop))
    table["p_known"] = p_known
    table["novelty"] = novelty
    table["best_similarity"] = best_similarity
    return table


def write_transfer(
    adata: AnnData,
    table: pd.DataFrame,
    keys: list[str],
    key_added: str,
    params: dict,
    similarities: np.ndarray | None = None,
    candidates: np.ndarray | None = None,
    probabilities: dict[str, np.ndarray] | None = None,
) -> list[str]:
    """Write a :func:`transfer_table` and its parameters to the target AnnData; returns the ``obs`` keys written.

    Per labels key ``k``: ``obs[f"{key_added}_{k}"]``, ``..._confidence`` (and ``..._majority_voting``); once:
    ``..._novelty`` and ``..._p_known``; ``uns[f"{key_added}_params"]`` = ``params`` with ``obs_keys``; with
    ``similarities``, ``obsm[f"{key_added}_similarity"]`` and ``..._similarity_index``; with ``probabilities``
    (per labels key, ``(n_obs, n_labels)``), ``obsm[f"{key_added}_{k}_probabilities"]`` as float32.
    """
    written = []
    for key, matrix in (probabilities or {}).items():
        adata.obsm[f"{key_added}_{key}_probabilities"] = np.asarray(matrix, dtype=np.float32)
    for key in keys:
        suffix = "" if len(keys) == 1 else f"_{key}"
        adata.obs[f"{key_added}_{key}"] = table[f"label{suffix}"].values
        adata.obs[f"{key_added}_{key}_confidence"] = table[f"confidence{suffix}"].to_numpy()
        written += [f"{key_added}_{key}", f"{key_added}_{key}_confidence"]
        if f"majority_voting{suffix}" in table:
            adata.obs[f"{key_added}_{key}_majority_voting"] = table[f"majority_voting{suffix}"].values
            written.append(f"{key_added}_{key}_majority_voting")
    adata.obs[f"{key_added}_novelty"] = table["novelty"].to_numpy()
    adata.obs[f"{key_added}_p_known"] = table["p_known"].to_numpy()
    written += [f"{key_added}_novelty", f"{key_added}_p_known"]
    if similarities is not None:
        adata.obsm[f"{key_added}_similarity"] = similarities.astype(np.float32)
        adata.obsm[f"{key_added}_similarity_index"] = candidates
    adata.uns[f"{key_added}_params"] = {**params, "obs_keys": written}
    return written
