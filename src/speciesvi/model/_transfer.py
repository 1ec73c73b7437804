"""Label transfer of a TargetVI (scSpecies step 6): gathers the inputs and calls :mod:`speciesvi.tl`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from ..module import AGREEMENT_KEY, NEIGHBORS_KEY
from ..module._similarity import DEFAULT_N_GRID
from ..tl._labels import check_p_thres, label_order, leiden_clusters
from ..tl._novelty import calibration_record, novelty_scores, novelty_to_p_known
from ..tl._similarity import sort_by_similarity
from ..tl._transfer import (
    ANCHOR_AGREEMENT,
    CONFIDENT_DATA_LEVEL,
    CandidateSource,
    MatchMode,
    check_mode,
    transfer_table,
    transfer_votes,
    write_transfer,
)
from ._similarity import TargetCells

logger = logging.getLogger(__name__)

#: Keys a novelty calibration must hold.
CALIBRATION_KEYS = frozenset({"scale", "overall", "location"})


class TransferMixin:
    """``transfer_labels``: mixed into :class:`~speciesvi.TargetVI` after :class:`SimilarityMixin`."""

    def _clusters(self, over_clustering: str | Sequence | np.ndarray, z: np.ndarray) -> tuple[np.ndarray, str]:
        if isinstance(over_clustering, str):
            if over_clustering in self.adata.obs:
                return self.adata.obs[over_clustering].astype(str).to_numpy(dtype=object), over_clustering
            if over_clustering != "leiden":
                raise ValueError(
                    f"over_clustering={over_clustering!r} is not a column of the target obs; pass an obs key, "
                    "per-cell cluster ids or 'leiden' (computed on the latent space)."
                )
            return leiden_clusters(z), "leiden (computed on the latent space)"
        clusters = np.asarray(over_clustering, dtype=object).reshape(-1)
        if clusters.shape[0] != self.adata.n_obs:
            raise ValueError(f"over_clustering must have one entry per target cell ({self.adata.n_obs}).")
        return clusters.astype(str), "array"

    def _votes_and_novelty(
        self,
        cells: TargetCells,
        keys: list[str],
        n_candidates: int,
        top_k: int,
        n_grid: int,
        batch_size: int | None,
        progress_bar: bool,
        source: CandidateSource = "data_level",
        fallback: float | None = ANCHOR_AGREEMENT,
        keep_data_level: float | None = CONFIDENT_DATA_LEVEL,
        mode: MatchMode = "best_match",
        p_thres: float = 0.5,
    ) -> tuple[np.ndarray, np.ndarray, dict, np.ndarray, dict, np.ndarray, dict]:
        """Sorted similarities and candidates, final votes, novelty, checks, novelty groups, vote shares.

        The novelty groups are the first key's similarity vote after the anchor check, before confident
        data-level labels are kept: the novelty is measured against the similarity voters, so it is judged
        among the cells that vote alike. The vote shares are, per key, the ``probabilities`` and their
        ``label_order`` (:func:`~speciesvi.tl.transfer_votes`).
        """
        rows = self._candidate_rows(cells, source, n_candidates)
        sims, candidates = sort_by_similarity(
            *self._similarities(cells, rows, n_candidates, n_grid, batch_size, progress_bar)
        )
        voters = candidates[:, :top_k]
        data_level_voters = np.asarray(self.adata_manager.get_from_registry(NEIGHBORS_KEY))[cells.indices, :top_k]
        anchors = None
        if fallback is not None:
            agreement = np.asarray(self.adata_manager.get_from_registry(AGREEMENT_KEY)).reshape(-1)
            anchors = agreement[cells.indices] < self.module.agreement_cutoff
        votes, checks, n_kept, groups, probabilities, order = {}, {}, {}, None, {}, {}
        for key in keys:
            order[key] = label_order(self._context_label_column(key))
            result = transfer_votes(
                self._context_labels(key),
                order[key],
                voters,
                data_level_voters,
                anchors,
                fallback,
                keep_data_level,
                mode,
                p_thres,
            )
            groups = result.similarity_labels if groups is None else groups
            votes[key] = (result.labels, result.shares)
            probabilities[key] = result.probabilities
            if fallback is not None:
                checks[key] = result.check
            n_kept[key] = result.n_kept
        checks = {"anchor_check": checks, "n_kept_data_level": n_kept}
        shares = {"probabilities": probabilities, "label_order": order}
        target_idx, context_idx = self._homologous_genes()
        novelty = novelty_scores(
            self.module.decoder,
            self._context_decoder(),
            cells.z,
            cells.batches,
            cells.counts,
            self.module.context_z_mean,
            self._context_batches(),
            voters,
            target_idx,
            context_idx,
            device=self.device,
        )
        return sims, candidates, votes, novelty, checks, groups, shares

    def _estimate_novelty_calibration(self, labels_key: str | None = None) -> dict:
        """Novelty location and scale on this model's own cells (transfer_labels defaults); writes nothing."""
        keys = self._context_label_keys(labels_key)
        cells = self._target_cells(np.arange(self.adata.n_obs), None)
        n_candidates = min(250, self._context_n_obs(), self.adata_manager.get_from_registry(NEIGHBORS_KEY).shape[1])
        top_k = min(25, n_candidates)
        *_, novelty, _, groups, _ = self._votes_and_novelty(
            cells, keys[:1], n_candidates, top_k, DEFAULT_N_GRID, None, False
        )
        _, stats = novelty_to_p_known(novelty, groups=groups)
        return calibration_record(keys[0], stats)

    def _novelty_calibration(self, novelty_calibration: str | dict, labels_key: str) -> dict | None:
        """The novelty location and scale to use, or ``None`` to estimate them from the cells at hand."""
        if isinstance(novelty_calibration, dict):
            missing = CALIBRATION_KEYS - set(novelty_calibration)
            if missing:
                raise ValueError(
                    f"novelty_calibration lacks {sorted(missing)}; pass the 'novelty_calibration' entry of "
                    "uns[f'{key_added}_params'] written by another transfer_labels."
                )
            return novelty_calibration
        if novelty_calibration not in ("auto", "own"):
            raise ValueError(f"novelty_calibration must be 'auto', 'own' or a dict, got {novelty_calibration!r}.")
        reference = getattr(self, "novelty_calibration_", None)  # set once, by load_query_data
        if novelty_calibration == "own" or not reference or reference.get("source") != "reference":
            return None
        if reference.get("labels_key") != labels_key:
            logger.info(
                "The reference's novelty calibration is for %r, not %r; estimating it from the query cells.",
                reference.get("labels_key"),
                labels_key,
            )
            return None
        return reference

    def transfer_labels(
        self,
        labels_key: str | Sequence[str] | None = None,
        candidates: CandidateSource = "data_level",
        n_candidates: int = 250,
        top_k: int = 25,
        data_level_fallback: float | None = ANCHOR_AGREEMENT,
        keep_data_level: float | None = CONFIDENT_DATA_LEVEL,
        unassigned_threshold: float | None = 0.5,
        over_clustering: str | Sequence | np.ndarray | None = None,
        min_prop: float = 0.0,
        key_added: str = "speciesvi",
        store_similarities: bool = False,
        batch_size: int | None = None,
        n_grid: int = DEFAULT_N_GRID,
        progress_bar: bool = False,
        novelty_calibration: Literal["auto", "own"] | dict = "auto",
        mode: MatchMode = "best_match",
        p_thres: float = 0.5,
    ) -> pd.DataFrame:
        """Transfer context labels to the target cells by a vote of their most similar context cells.

        1. :meth:`similarity` scores ``n_candidates`` candidates of every target cell: by default its
           data-level neighbours (:func:`speciesvi.pp.homolog_neighbors`, nearest first), which do not depend
           on the alignment, so an alignment that places a target type beside the wrong context type cannot
           take the right context cells out of the running; ``candidates="latent"`` scores the nearest
           context cells in the aligned latent space instead, as the original scSpecies does. The ``top_k``
           most similar vote, and the majority label wins (ties: the more similar voter).
           **Anchor check.** The anchor cells (those the alignment uses: lowest data-level agreement
           score, ``top_percent`` of each label) carry the most reliable data-level labels. If the vote
           gives fewer than ``data_level_fallback`` of a label's anchors that label, the similarity cannot
           be trusted with it on these data, and every cell whose vote or data-level label is that label
           keeps its data-level vote (the ``top_k`` nearest data-level neighbours) instead. Uses no target
           labels; the labels concerned and the agreement per label go to ``uns``.
           **Confident data-level labels stand.** A cell at least ``keep_data_level`` of whose ``top_k``
           nearest data-level neighbours agree keeps that label: re-ranking settles the cells the data leave
           open (PP against D cells, say) and cannot improve on a near-unanimous data-level vote, only add
           the alignment's training noise to it.
        2. **Novelty.** The target decoder can reproduce a cell type the context lacks wherever it lands in
           the shared latent space, so similarities alone cannot tell that a cell is unlike every context
           cell. Only the context model knows what context cells look like: on the homologous genes, the
           novelty of a cell is the log-likelihood ratio, in nats per homologous count, between its own
           target-decoded expression profile and the best profile among its voters' context-decoded ones
           (each renormalised over the homologous genes). Typical cells score the species' divergence; a
           cell type the context lacks scores far above it.
        3. ``p_known = Phi(4 - u)`` with ``u`` the robust z-score of the novelty among the cells given the
           same label (location and scale from the lower tail of the label's novelty, which cells of a
           novel type do not reach): a smoothed Hampel outlier rule that needs no target labels. It is 1/2
           four robust standard deviations above the typical cell of the label (see
           :func:`novelty_to_p_known`).
           A query model (:meth:`load_query_data`) uses the location and scale estimated on its reference
           model's cells instead (``novelty_calibration="auto"``): a new donor of a few hundred cells holds
           too few cells per label to estimate them well.
        4. ``confidence = vote share x p_known``; cells with ``p_known < unassigned_threshold`` are
           "Unassigned".
        5. **Probabilities**, as CellTypist's probability matrix: per cell, the vote share of every context
           label among the voters that gave the cell its label: its ``top_k`` data-level neighbours where the
           anchor check or a confident data-level vote decided the label (so the probabilities agree with
           the label kept), its ``top_k`` most similar candidates otherwise. The share of the best-match
           label is ``vote_share``; rows sum to 1 unless voters lack a label. ``mode="prob_match"`` gives a
           cell every label whose share reaches ``p_thres``, joined by "|", or "Unassigned" if none does
           (``vote_share`` and ``confidence`` stay those of the best match, as CellTypist's ``conf_score``).
        6. With ``over_clustering``, CellTypist-style majority voting: every cell gets the most frequent
           label ("Unassigned" included) of its cluster.

        Writes, for every labels key ``k``, ``target.obs[f"{key_added}_{k}"]`` (label),
        ``..._confidence`` and, with ``over_clustering``, ``..._majority_voting``; ``..._novelty`` and
        ``..._p_known`` once; ``target.obsm[f"{key_added}_{k}_probabilities"]`` (float32, cells x labels; the
        labels under ``uns[f"{key_added}_params"]["label_order"][k]``); ``target.uns[f"{key_added}_params"]``
        with all parameters (the novelty location and scale under ``"novelty_calibration"``); with
        ``store_similarities``, ``target.obsm[f"{key_added}_similarity"]`` and ``..._similarity_index``
        (sorted similarities and context indices).

        Parameters
        ----------
        labels_key
            Context ``obs`` column(s) to transfer; defaults to the context model's ``labels_key``.
        candidates
            ``"data_level"`` (the target's data-level neighbours, stored by
            :func:`speciesvi.pp.homolog_neighbors` and registered by ``setup_anndata``) or ``"latent"`` (the
            nearest context cells in the aligned latent space). See ``docs/method.md`` for why data-level
            candidates are the default.
        n_candidates
            Candidates scored per target cell (250 as the original); with ``"data_level"``, at most the
            number of stored neighbours.
        top_k
            Most similar candidates that vote (25 as the original); at most ``n_candidates``.
        data_level_fallback
            Anchor check (step 1): smallest share of a label's anchor cells the vote must label alike, in
            ``[0, 1]``; ``None`` turns the check off.
        keep_data_level
            Data-level vote share (of the ``top_k`` nearest data-level neighbours) from which a cell keeps its
            data-level label, in ``[0, 1]``; ``None`` lets the similarity vote label every cell.
        unassigned_threshold
            Cells with ``p_known`` below it are "Unassigned"; in ``(0, 1)``. The default 0.5 flags cells
            more than 4 robust standard deviations above the typical novelty of their label. ``None`` assigns
            every cell.
        over_clustering
            Target ``obs`` key with clusters, per-cell cluster ids, or ``"leiden"`` (Leiden clustering of
            the latent space; needs ``igraph`` and ``leidenalg``) for majority voting.
        min_prop
            Majority voting: clusters whose top label has a smaller share are "Heterogeneous".
        key_added
            Prefix of the keys written to the target AnnData.
        store_similarities
            Also store the similarities and candidate indices in ``target.obsm``.
        batch_size, n_grid, progress_bar
            As in :meth:`similarity`.
        novelty_calibration
            Where the location and scale of the novelty come from: ``"auto"`` (the reference's for a query
            model built by :meth:`load_query_data`, else these cells), ``"own"`` (these cells) or the
            ``uns[f"{key_added}_params"]["novelty_calibration"]`` of another transfer with the same context
            labels. The location and scale used are written there; the model itself is left unchanged.
        mode
            ``"best_match"`` (the label with the largest vote share) or ``"prob_match"`` (every label whose
            vote share reaches ``p_thres``, joined by "|"; "Unassigned" if none), as CellTypist's ``mode``.
        p_thres
            ``mode="prob_match"``: smallest vote share of a label a cell is given, in ``(0, 1)``.

        Returns
        -------
        pandas.DataFrame
            Indexed by the target ``obs_names``. With one labels key: ``label``, ``confidence``,
            ``vote_share`` (and ``majority_voting``); with several, the same columns suffixed by
            ``_{key}``; plus ``p_known``, ``novelty`` and ``best_similarity`` (``s`` of the most similar
            candidate).

        Examples
        --------
        >>> result = target.transfer_labels(over_clustering="leiden")
        >>> result["label"].value_counts()
        >>> human.obs["speciesvi_cell_ontology_class_confidence"].describe()
        >>> shares = human.obsm["speciesvi_cell_ontology_class_probabilities"]  # cells x context labels
        >>> order = human.uns["speciesvi_params"]["label_order"]["cell_ontology_class"]
        >>> target.transfer_labels(mode="prob_match", p_thres=0.3, key_added="prob")  # e.g. "alpha|beta"
        """
        keys = self._context_label_keys(labels_key)
        if not isinstance(top_k, int | np.integer) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}.")
        if not isinstance(n_candidates, int | np.integer) or n_candidates < top_k:
            raise ValueError(f"n_candidates ({n_candidates}) must be an integer of at least top_k ({top_k}).")
        if unassigned_threshold is not None and not 0.0 < unassigned_threshold < 1.0:
            raise ValueError(f"unassigned_threshold must be in (0, 1) or None, got {unassigned_threshold}.")
        if not 0.0 <= min_prop <= 1.0:
            raise ValueError(f"min_prop must be in [0, 1], got {min_prop}.")
        if not isinstance(key_added, str) or not key_added:
            raise ValueError("key_added must be a non-empty string.")
        if data_level_fallback is not None and not 0.0 <= data_level_fallback <= 1.0:
            raise ValueError(f"data_level_fallback must be in [0, 1] or None, got {data_level_fallback}.")
        if keep_data_level is not None and not 0.0 <= keep_data_level <= 1.0:
            raise ValueError(f"keep_data_level must be in [0, 1] or None, got {keep_data_level}.")
        mode, p_thres = check_mode(mode), check_p_thres(p_thres)

        cells = self._target_cells(np.arange(self.adata.n_obs), batch_size)
        clusters, clustering_name = (None, None)
        if over_clustering is not None:
            clusters, clustering_name = self._clusters(over_clustering, cells.z)
        sims, candidate_index, votes, novelty, checks, groups, shares = self._votes_and_novelty(
            cells,
            keys,
            n_candidates,
            top_k,
            n_grid,
            batch_size,
            progress_bar,
            candidates,
            data_level_fallback,
            keep_data_level,
            mode,
            p_thres,
        )
        calibration = self._novelty_calibration(novelty_calibration, keys[0])
        p_known, novelty_stats = novelty_to_p_known(novelty, groups=groups, calibration=calibration)
        table = transfer_table(
            votes, p_known, novelty, sims[:, 0], self.adata.obs_names, unassigned_threshold, clusters, min_prop
        )
        n_unassigned = int((p_known < unassigned_threshold).sum()) if unassigned_threshold is not None else 0
        params = {
            "labels_key": keys,
            "candidates": candidates,
            "n_candidates": int(n_candidates),
            "top_k": int(top_k),
            "data_level_fallback": "None" if data_level_fallback is None else float(data_level_fallback),
            "keep_data_level": "None" if keep_data_level is None else float(keep_data_level),
            **checks,
            "unassigned_threshold": "None" if unassigned_threshold is None else float(unassigned_threshold),
            "over_clustering": "None" if clustering_name is None else clustering_name,
            "min_prop": float(min_prop),
            "n_grid": int(n_grid),
            "novelty_scale": novelty_stats["scale"],
            "novelty_sds": novelty_stats["sds"],
            "novelty_location": {str(k): v for k, v in novelty_stats["location"].items()},
            "novelty_group_scale": {str(k): v for k, v in novelty_stats["group_scale"].items()},
            "novelty_calibration": calibration_record(
                keys[0], novelty_stats, "own" if calibration is None else str(calibration.get("source", "given"))
            ),
            "n_unassigned": n_unassigned,
            "store_similarities": bool(store_similarities),
            "mode": mode,
            "p_thres": p_thres,
            "label_order": shares["label_order"],
        }
        write_transfer(
            self.adata,
            table,
            keys,
            key_added,
            params,
            similarities=sims if store_similarities else None,
            candidates=candidate_index if store_similarities else None,
            probabilities=shares["probabilities"],
        )
        logger.info(
            "transfer_labels: %d of %d target cells Unassigned (novelty scale %.3f nats per homologous count)",
            n_unassigned,
            p_known.shape[0],
            novelty_stats["scale"],
        )
        return table
