"""Similarity, label transfer and cell-type similarity of a TargetVI (scSpecies steps 5-7)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import scvi
import torch
from scipy import sparse
from scipy.special import ndtr
from scvi import REGISTRY_KEYS

from ..module import AGREEMENT_KEY, NEIGHBORS_KEY
from ..module._similarity import DEFAULT_N_GRID, CountsCSR, candidate_log_likelihood, profile_log_likelihood
from ..tl._labels import HETEROGENEOUS, UNASSIGNED, anchor_fallback, histogram_mode, majority_voting, vote

logger = logging.getLogger(__name__)

#: Exact (brute-force) latent neighbour search below this many target x context pairs, pynndescent above.
EXACT_KNN_MAX_PAIRS = 2e8
#: Robust standard deviations above the typical novelty where ``p_known`` is 1/2: the smallest value (on a
#: half-SD grid) that leaves at most 2 % of a held-out context donor's cells Unassigned in the context
#: self-projections of both Baron species (docs/method.md).
NOVELTY_SDS = 4.0
#: A normal distribution's median lies this many standard deviations above its 25th percentile.
LOWER_QUARTILE_Z = 0.6745
#: Distance between a normal distribution's 25th and 5th percentiles, in standard deviations.
LOWER_TAIL_WIDTH = 0.9704
#: Labels with fewer target cells share the novelty location of all cells and do not inform the scale.
MIN_GROUP_SIZE = 20
#: Where the candidates of :meth:`SimilarityMixin.transfer_labels` come from.
CandidateSource = Literal["data_level", "latent"]
#: Share of a label's anchor cells the similarity vote must label alike, or that label falls back to the
#: data-level vote (``transfer_labels(data_level_fallback=...)``).
ANCHOR_AGREEMENT = 0.9
#: Cells encoded per minibatch when no ``batch_size`` is given.
ENCODE_BATCH_SIZE = 1024


def latent_neighbors(query: np.ndarray, index: np.ndarray, k: int, random_state: int = 0) -> np.ndarray:
    """The ``k`` nearest ``index`` rows of every ``query`` row (euclidean), nearest first.

    Exact search (scikit-learn) for small inputs, approximate (pynndescent) for large ones.

    Parameters
    ----------
    query
        ``(n_query, d)``.
    index
        ``(n_index, d)``.
    k
        Number of neighbours (at most ``n_index``).
    random_state
        Seed of pynndescent.

    Returns
    -------
    numpy.ndarray
        ``(n_query, k)`` int64 row indices of ``index``.

    Examples
    --------
    >>> import numpy as np
    >>> latent_neighbors(np.zeros((1, 2)), np.array([[3.0, 0], [1, 0], [2, 0]]), 2).tolist()
    [[1, 2]]
    """
    query = np.ascontiguousarray(query, dtype=np.float32)
    index = np.ascontiguousarray(index, dtype=np.float32)
    if not 1 <= k <= index.shape[0]:
        raise ValueError(f"k must be between 1 and the {index.shape[0]} indexed cells, got {k}.")
    if float(query.shape[0]) * index.shape[0] <= EXACT_KNN_MAX_PAIRS:
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(index)
        return nn.kneighbors(query, return_distance=False).astype(np.int64)
    from pynndescent import NNDescent

    graph = NNDescent(index, n_neighbors=min(max(30, k), index.shape[0] - 1), random_state=random_state)
    graph.prepare()
    neighbors, _ = graph.query(query, k=k)
    return neighbors.astype(np.int64)


def novelty_to_p_known(
    novelty: np.ndarray,
    groups: np.ndarray | None = None,
    min_group_size: int = MIN_GROUP_SIZE,
    calibration: dict | None = None,
) -> tuple[np.ndarray, dict]:
    """Probability that a cell belongs to a context type, from its novelty score (no labels needed).

    Cells are compared with the cells given the same label (``groups``), since how much two species
    diverge, and how much that varies from cell to cell, depends on the cell type:
    ``u = (novelty - location of the group) / scale of the group`` and ``p_known = Phi(4 - u)``, a smoothed
    Hampel outlier rule: 1/2 four robust standard deviations above the typical cell of the group, about 1
    for typical cells, about 0 for strong outliers.

    Cells of a type the context lacks join the label of their most similar context type and sit in the
    upper tail of its novelty, so both estimates come from the lower tail, which they do not reach while
    they are fewer than the known cells of the label. For normal novelty without such cells, they are
    unbiased:

    * ``scale`` of a group: its ``(25th - 5th percentile) / 0.970``, but never below the pooled scale (those
      of the groups with at least ``min_group_size`` cells, averaged weighted by their size; all cells as
      one group if there is none): a label whose cells vary more than the typical one gets its own, wider
      yardstick, and none is judged on a narrower one than the typical label, which a few cells' lower
      tail can fake. Groups with fewer than ``min_group_size`` cells use the pooled scale;
    * ``location`` of a group: its 25th percentile + 0.674 times its scale; groups with fewer than
      ``min_group_size`` cells use the 25th percentile of all cells + 0.674 pooled scales.

    Cells without a score (NaN) get ``u = 0``. With ``calibration`` (the ``stats`` of an earlier call, for
    instance on the reference cells of a query model), its locations and scales are used instead of
    estimates from ``novelty``; groups it does not know use its overall location and pooled scale.

    Parameters
    ----------
    novelty
        Per-cell novelty scores (higher = less like any context cell).
    groups
        Per-cell labels (the transferred ones); ``None`` treats all cells as one group.
    min_group_size
        Smallest group with its own location and a say in the scale.
    calibration
        ``stats`` returned by an earlier call: the ``scale``, the ``location`` of every group and the
        ``overall`` location.

    Returns
    -------
    p_known
        ``(n_cells,)`` in ``[0, 1]``.
    stats
        ``scale`` (pooled), ``sds`` (4), the ``location`` and ``group_scale`` of every group and the
        ``overall`` location (of groups with fewer than ``min_group_size`` cells), to store with the results.

    Examples
    --------
    >>> from scipy.stats import norm
    >>> typical = 1.0 + 0.1 * norm.ppf(np.linspace(0.005, 0.995, 100))  # normal around 1 with sd 0.1
    >>> p, stats = novelty_to_p_known(np.concatenate([typical, [3.0, 4.0]]))
    >>> np.flatnonzero(p < 0.5).tolist(), round(stats["scale"], 2)
    ([100, 101], 0.1)
    """
    novelty = np.asarray(novelty, dtype=np.float64)
    groups = np.zeros(novelty.shape[0], dtype=np.int64) if groups is None else np.asarray(groups)
    finite = np.isfinite(novelty)
    if calibration is not None:
        scale, overall, location = calibration["scale"], calibration["overall"], calibration["location"]
        group_scale = calibration.get("group_scale", {})  # absent from calibrations saved before 0.3
        lookup = groups.astype(str)  # a stored calibration keys its groups by name
    elif not finite.any():
        stats = {"scale": float("nan"), "sds": NOVELTY_SDS, "location": {}, "group_scale": {}, "overall": 0.0}
        return np.ones_like(novelty), stats
    else:
        scale, overall, location, group_scale = _novelty_location_scale(novelty[finite], groups[finite], min_group_size)
        lookup = groups
    cell_location = np.array([location.get(group, overall) for group in lookup], dtype=np.float64)
    cell_scale = np.array([group_scale.get(group, scale) for group in lookup], dtype=np.float64)
    u = np.where(finite, (novelty - cell_location) / cell_scale, 0.0)
    stats = {"scale": scale, "sds": NOVELTY_SDS, "location": location, "group_scale": group_scale, "overall": overall}
    return ndtr(NOVELTY_SDS - u), {**(calibration or {}), **stats}


def _novelty_location_scale(
    novelty: np.ndarray, groups: np.ndarray, min_group_size: int
) -> tuple[float, float, dict, dict]:
    """Pooled scale, overall location, per-group location and scale of finite novelty (see novelty_to_p_known)."""
    frame = pd.DataFrame({"novelty": novelty, "group": groups})
    by_group = frame.groupby("group", sort=True, observed=True)["novelty"]
    sizes, lower, lowest = by_group.size(), by_group.quantile(0.25), by_group.quantile(0.05)
    big = sizes.index[sizes >= min_group_size]
    own = (lower - lowest) / LOWER_TAIL_WIDTH
    if len(big):
        scale = float(np.average(own[big], weights=sizes[big]))
    else:
        scale = float((frame["novelty"].quantile(0.25) - frame["novelty"].quantile(0.05)) / LOWER_TAIL_WIDTH)
    if not scale > 0:
        scale = float(frame["novelty"].std()) or 1.0
    overall = float(frame["novelty"].quantile(0.25)) + LOWER_QUARTILE_Z * scale
    group_scale = {group: max(float(own[group]), scale) if group in big else scale for group in sizes.index}
    location = {
        group: float(lower[group]) + LOWER_QUARTILE_Z * group_scale[group] if group in big else overall
        for group in sizes.index
    }
    return scale, overall, location, group_scale


def _own_calibration(labels_key: str, stats: dict) -> dict:
    """The ``novelty_calibration_`` record of location and scale estimated on a model's own cells."""
    return {
        "labels_key": labels_key,
        "source": "own",
        "scale": stats["scale"],
        "overall": stats["overall"],
        "location": {str(k): v for k, v in stats["location"].items()},
        "group_scale": {str(k): v for k, v in stats["group_scale"].items()},
    }


@dataclass
class _TargetCells:
    """Everything about a set of target cells the kernels need."""

    indices: np.ndarray
    z: np.ndarray
    log_library: np.ndarray
    batches: np.ndarray
    counts: CountsCSR


class SimilarityMixin:
    """Decoder-likelihood similarity of target cells to context cells, and what builds on it.

    Mixed into :class:`~speciesvi.TargetVI`; reads the context through
    :class:`~speciesvi.model._context_access.ContextAccessMixin`; needs ``self.module.decoder`` and
    ``self.module.context_z_mean``.
    """

    # -- inputs ----------------------------------------------------------------------------------
    def _target_indices(self, indices: Sequence[int] | np.ndarray | None) -> np.ndarray:
        n_obs = self.adata.n_obs
        if indices is None:
            return np.arange(n_obs)
        indices = np.asarray(indices)
        if indices.dtype == bool:
            if indices.shape[0] != n_obs:
                raise ValueError(f"A boolean mask of target cells must have length {n_obs}.")
            return np.flatnonzero(indices)
        indices = indices.astype(np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= n_obs):
            raise ValueError(f"Target cell indices must lie in [0, {n_obs}); got {indices.min()}..{indices.max()}.")
        return indices

    @torch.inference_mode()
    def _target_cells(self, indices: np.ndarray, batch_size: int | None) -> _TargetCells:
        """Posterior means of z and log library, batches and sparse counts of target cells (one encoding pass)."""
        self._check_if_trained(warn=False)
        self.module.eval()
        loader = self._make_data_loader(
            adata=self.adata, indices=indices, batch_size=batch_size or ENCODE_BATCH_SIZE, shuffle=False
        )
        z_parts, library_parts = [], []
        for tensors in loader:
            x = tensors[REGISTRY_KEYS.X_KEY].to(self.device)
            batch_index = tensors[REGISTRY_KEYS.BATCH_KEY].to(self.device)
            z_parts.append(self.module.z_posterior(self.module.outer(x, batch_index))[0].cpu())
            library_parts.append(self.module.library_posterior(x, batch_index)[0].cpu())
        z = torch.cat(z_parts).numpy() if z_parts else np.zeros((0, self.module.n_latent), dtype=np.float32)
        log_library = torch.cat(library_parts).numpy()[:, 0] if library_parts else np.zeros(0, dtype=np.float32)
        x = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        rows = sparse.csr_matrix(x)[indices] if sparse.issparse(x) else sparse.csr_matrix(np.asarray(x[indices]))
        batches = np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)).reshape(-1)[indices]
        return _TargetCells(indices, z, log_library, batches.astype(np.int64), CountsCSR.from_scipy(rows))

    def _context_latent(self) -> np.ndarray:
        return self.module.context_z_mean.detach().cpu().numpy()

    def _check_candidates(self, candidates: np.ndarray, n_cells: int) -> np.ndarray:
        n_context = self.module.context_z_mean.shape[0]
        candidates = np.asarray(candidates)
        if candidates.ndim == 1:
            candidates = np.broadcast_to(candidates, (n_cells, candidates.shape[0]))
        if candidates.ndim != 2 or candidates.shape[0] != n_cells or candidates.shape[1] == 0:
            raise ValueError(
                f"candidates must have one non-empty row per target cell ({n_cells}), got {candidates.shape}."
            )
        if not np.issubdtype(candidates.dtype, np.integer):
            raise ValueError("candidates must be integer positions of context cells.")
        if candidates.min() < 0 or candidates.max() >= n_context:
            raise ValueError(f"Candidate context indices must lie in [0, {n_context}).")
        return np.ascontiguousarray(candidates, dtype=np.int64)

    # -- similarity ------------------------------------------------------------------------------
    def _similarities(
        self,
        cells: _TargetCells,
        candidates: np.ndarray | None,
        n_candidates: int,
        n_grid: int,
        batch_size: int | None,
        progress_bar: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Unsorted similarities ``(n, k)`` of ``cells`` to their candidates, and the candidates."""
        context_z = self._context_latent()
        n = cells.indices.shape[0]
        if candidates is None:
            if not 1 <= n_candidates <= context_z.shape[0]:
                raise ValueError(
                    f"n_candidates must be between 1 and the {context_z.shape[0]} context cells, got {n_candidates}."
                )
            candidates = latent_neighbors(cells.z, context_z, n_candidates)
        else:
            candidates = self._check_candidates(candidates, n)
        device = self.device
        kwargs = {"n_grid": n_grid}
        if batch_size is not None:
            kwargs["max_elements"] = max(1, int(batch_size)) * cells.counts.n_genes
        batches = torch.as_tensor(cells.batches)
        log_library = torch.as_tensor(cells.log_library)
        decoder = self.module.decoder
        pair = candidate_log_likelihood(
            decoder,
            torch.as_tensor(context_z, device=device),
            torch.as_tensor(candidates, device=device),
            cells.counts,
            batches,
            log_library,
            progress_bar=progress_bar,
            **kwargs,
        )
        own = candidate_log_likelihood(
            decoder,
            torch.as_tensor(cells.z, device=device),
            torch.arange(n, device=device).unsqueeze(1),
            cells.counts,
            batches,
            log_library,
            dense="exact",
            **kwargs,
        )
        sims = (own - pair).cpu().numpy()  # NLL(x | z_j) - NLL(x | z_i)
        return sims, candidates

    def similarity(
        self,
        indices: Sequence[int] | np.ndarray | None = None,
        candidates: np.ndarray | None = None,
        n_candidates: int = 250,
        batch_size: int | None = None,
        n_grid: int = DEFAULT_N_GRID,
        progress_bar: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Likelihood-based similarity of target cells to context cells (lower is more similar).

        ``s(i, j) = NLL(x_i | decoder_T(z_j, b_i), l_i) - NLL(x_i | decoder_T(z_i, b_i), l_i)``: how much
        worse (in nats) the target decoder explains target cell ``i``'s counts from context cell ``j``'s
        latent code than from the cell's own, under the cell's batch ``b_i`` and library size ``l_i``.
        ``z`` are posterior means (``z_j`` from the context model), ``l_i`` is ``exp`` of the library
        posterior mean. ``s`` is 0 for a context cell that explains the counts as well as the cell's own
        code and can be negative for a better one.

        Each context cell is decoded once per target batch and the likelihood is split into a dense part
        that depends on the cell only through its library size (interpolated on a grid of ``n_grid`` log
        library sizes per batch) and a sparse part over the cell's non-zero counts; see
        :func:`~speciesvi.module._similarity.candidate_log_likelihood`.

        Parameters
        ----------
        indices
            Target cells (positions in the target AnnData, or a boolean mask); defaults to all.
        candidates
            Context cell indices to score, ``(n_cells, k)`` (or ``(k,)`` for the same ones for every cell);
            defaults to the ``n_candidates`` nearest context cells in the aligned latent space (euclidean;
            exact search for small data, pynndescent for large).
        n_candidates
            Number of latent-space candidates when ``candidates`` is not given.
        batch_size
            Context cells decoded at once (memory is a small multiple of ``batch_size * n_genes * 4``
            bytes); defaults to about 4M elements per chunk.
        n_grid
            Log-library grid points per target batch for the interpolated dense part of the likelihood.
        progress_bar
            Show a progress bar over the chunks.

        Returns
        -------
        similarities
            ``(n_cells, k)`` float32, sorted ascending along each row.
        context_indices
            ``(n_cells, k)`` int64 context cell indices in the same order.

        Examples
        --------
        >>> sims, idx = target.similarity(n_candidates=100)
        >>> best_match_of_first_target_cell = context.adata.obs_names[idx[0, 0]]
        """
        cells = self._target_cells(self._target_indices(indices), batch_size)
        sims, candidates = self._similarities(cells, candidates, n_candidates, n_grid, batch_size, progress_bar)
        order = np.argsort(sims, axis=1, kind="stable")
        return np.take_along_axis(sims, order, 1).astype(np.float32), np.take_along_axis(candidates, order, 1)

    # -- novelty ---------------------------------------------------------------------------------
    def _homologous_genes(self) -> tuple[np.ndarray, np.ndarray]:
        """Positions of the homologous genes in the target and (same order) in the context AnnData."""
        var = self.adata.var
        if "context_gene" not in var:
            raise ValueError("The target AnnData has no var['context_gene']; run speciesvi.pp.translate_genes first.")
        context_names = self._context_var_names()
        context_gene = var["context_gene"].astype(object)
        known = context_gene.notna().to_numpy() & context_gene.isin(context_names).to_numpy()
        target_idx = np.flatnonzero(known)
        context_idx = context_names.get_indexer(context_gene.to_numpy()[known])
        if target_idx.size == 0:
            raise ValueError("No target gene has a homolog among the context model's genes.")
        return target_idx, context_idx

    @torch.inference_mode()
    def _novelty(self, cells: _TargetCells, voters: np.ndarray) -> np.ndarray:
        """Per-cell novelty: nats per homologous UMI by which the best voter's context profile falls short.

        ``(sum_g x_g log p^T_g - max_j sum_g x_g log p^C_jg) / sum_g x_g`` over the homologous genes, with
        ``p^T`` the cell's own target-decoded expression and ``p^C_j`` context cell ``j``'s context-decoded
        expression (its own batch), both renormalised over the homologous genes.
        """
        target_idx, context_idx = self._homologous_genes()
        counts = cells.counts
        csr = sparse.csr_matrix((counts.data.numpy(), counts.indices.numpy(), counts.indptr.numpy()))
        csr.resize((counts.n_cells, counts.n_genes))
        homologous = CountsCSR.from_scipy(csr[:, target_idx])
        device = self.device
        target_decoder, context_decoder = self.module.decoder, self._context_decoder()
        target_genes = torch.as_tensor(target_idx, device=device)
        context_genes = torch.as_tensor(context_idx, device=device)
        z = torch.as_tensor(cells.z, device=device)
        batch = torch.as_tensor(cells.batches, device=device).reshape(-1, 1)
        context_z = self.module.context_z_mean.to(device)
        context_batch = torch.as_tensor(self._context_batches(), device=device).reshape(-1, 1)

        def target_profiles(codes: torch.Tensor) -> torch.Tensor:
            codes = codes.to(device)
            logits = target_decoder.expression_logits(z[codes], batch[codes])[:, target_genes]
            return torch.log_softmax(logits, dim=-1).cpu()

        def context_profiles(codes: torch.Tensor) -> torch.Tensor:
            codes = codes.to(device)
            logits = context_decoder.expression_logits(context_z[codes], context_batch[codes])
            return torch.log_softmax(logits[:, context_genes], dim=-1).cpu()

        modes = (target_decoder.training, context_decoder.training)
        target_decoder.eval()
        context_decoder.eval()
        try:
            n = cells.indices.shape[0]
            own = profile_log_likelihood(target_profiles, torch.arange(n).unsqueeze(1), homologous, n)[:, 0]
            best = profile_log_likelihood(
                context_profiles, torch.as_tensor(voters), homologous, context_z.shape[0]
            ).amax(dim=1)
        finally:
            target_decoder.train(modes[0])
            context_decoder.train(modes[1])
        total = homologous.row_sums().double()
        novelty = ((own - best) / total).numpy()
        novelty[total.numpy() == 0] = np.nan
        return novelty

    # -- labels ----------------------------------------------------------------------------------
    def _context_label_keys(self, labels_key: str | Sequence[str] | None) -> list[str]:
        if labels_key is None:
            labels_key = self._context_labels_key()
            if labels_key is None:
                raise ValueError(
                    "The context model has no labels: set it up with ContextVI.setup_anndata(..., labels_key=...) "
                    "or pass labels_key= (a column of the context AnnData's obs)."
                )
        keys = [labels_key] if isinstance(labels_key, str) else list(labels_key)
        if not keys or not all(isinstance(key, str) for key in keys):
            raise ValueError("labels_key must name one or more columns of the context AnnData's obs.")
        available = self._context_label_columns()
        missing = [key for key in keys if key not in available]
        if missing:
            raise ValueError(f"The context AnnData has no obs column(s) {missing}; available: {available}.")
        return keys

    def _context_labels(self, key: str) -> np.ndarray:
        """Context labels as strings; missing labels become ``None`` (they do not vote)."""
        column = self._context_label_column(key)
        labels = column.astype(str).to_numpy(dtype=object)
        labels[column.isna().to_numpy()] = None
        return labels

    def _clusters(self, over_clustering: str | Sequence | np.ndarray, z: np.ndarray) -> tuple[np.ndarray, str]:
        if isinstance(over_clustering, str):
            if over_clustering in self.adata.obs:
                return self.adata.obs[over_clustering].astype(str).to_numpy(dtype=object), over_clustering
            if over_clustering != "leiden":
                raise ValueError(
                    f"over_clustering={over_clustering!r} is not a column of the target obs; pass an obs key, "
                    "per-cell cluster ids or 'leiden' (computed on the latent space)."
                )
            return _leiden(z), "leiden (computed on the latent space)"
        clusters = np.asarray(over_clustering, dtype=object).reshape(-1)
        if clusters.shape[0] != self.adata.n_obs:
            raise ValueError(f"over_clustering must have one entry per target cell ({self.adata.n_obs}).")
        return clusters.astype(str), "array"

    def _candidate_rows(self, cells: _TargetCells, source: CandidateSource, n_candidates: int) -> np.ndarray | None:
        """The data-level candidates of ``cells`` (their first ``n_candidates``), or ``None`` for latent ones."""
        if source == "latent":
            return None
        if source != "data_level":
            raise ValueError(f"candidates must be 'data_level' or 'latent', got {source!r}.")
        neighbors = np.asarray(self.adata_manager.get_from_registry(NEIGHBORS_KEY))
        if n_candidates > neighbors.shape[1]:
            logger.info(
                "Scoring the %d stored data-level neighbours of every cell (n_candidates=%d).",
                neighbors.shape[1],
                n_candidates,
            )
        return neighbors[cells.indices, :n_candidates].astype(np.int64)

    def _votes_and_novelty(
        self,
        cells: _TargetCells,
        keys: list[str],
        n_candidates: int,
        top_k: int,
        n_grid: int,
        batch_size: int | None,
        progress_bar: bool,
        source: CandidateSource = "data_level",
        fallback: float | None = ANCHOR_AGREEMENT,
    ) -> tuple[np.ndarray, np.ndarray, dict, np.ndarray, dict]:
        """Sorted similarities and candidates, the votes, the novelty and the anchor check of every key.

        The votes are those of the ``top_k`` most similar candidates, except for the cells that
        :func:`~speciesvi.tl._labels.anchor_fallback` sends back to the data-level vote (``fallback`` is its
        ``min_agreement``; ``None`` skips the check). The novelty is measured against the ``top_k`` most
        similar candidates.
        """
        rows = self._candidate_rows(cells, source, n_candidates)
        sims, candidates = self._similarities(cells, rows, n_candidates, n_grid, batch_size, progress_bar)
        order = np.argsort(sims, axis=1, kind="stable")
        sims = np.take_along_axis(sims, order, 1)
        candidates = np.take_along_axis(candidates, order, 1)
        voters = candidates[:, :top_k]
        votes, checks = {}, {}
        for key in keys:
            context_labels = self._context_labels(key)
            label, share = vote(context_labels[voters])
            if fallback is not None:
                label, share, checks[key] = self._anchor_checked(cells, context_labels, label, share, top_k, fallback)
            votes[key] = (label, share)
        return sims, candidates, votes, self._novelty(cells, voters), checks

    def _anchor_checked(
        self,
        cells: _TargetCells,
        context_labels: np.ndarray,
        label: np.ndarray,
        share: np.ndarray,
        top_k: int,
        min_agreement: float,
    ) -> tuple[np.ndarray, np.ndarray, dict]:
        """Labels and shares after the anchor check, and its record (agreement per label, fallen-back cells)."""
        neighbors = np.asarray(self.adata_manager.get_from_registry(NEIGHBORS_KEY))[cells.indices, :top_k]
        data_label, data_share = vote(context_labels[neighbors.astype(np.int64)])
        agreement_score = np.asarray(self.adata_manager.get_from_registry(AGREEMENT_KEY)).reshape(-1)
        anchors = agreement_score[cells.indices] < self.module.agreement_cutoff
        use_data_level, agreement = anchor_fallback(label, data_label, anchors, min_agreement)
        record = {
            "anchor_agreement": agreement,
            "data_level_labels": sorted(k for k, v in agreement.items() if v < min_agreement),
            "n_data_level": int(use_data_level.sum()),
        }
        if use_data_level.any():
            logger.info(
                "transfer_labels: the similarity vote disagrees with the data-level label of the anchor cells of "
                "%s; their %d cells keep the data-level vote.",
                record["data_level_labels"],
                record["n_data_level"],
            )
        label = np.where(use_data_level, data_label, label).astype(object)
        return label, np.where(use_data_level, data_share, share), record

    def _estimate_novelty_calibration(self, labels_key: str | None = None) -> dict:
        """Novelty location and scale on this model's own cells (transfer_labels defaults); writes nothing."""
        keys = self._context_label_keys(labels_key)
        cells = self._target_cells(np.arange(self.adata.n_obs), None)
        n_candidates = min(250, self._context_n_obs(), self.adata_manager.get_from_registry(NEIGHBORS_KEY).shape[1])
        top_k = min(25, n_candidates)
        _, _, votes, novelty, _ = self._votes_and_novelty(
            cells, keys[:1], n_candidates, top_k, DEFAULT_N_GRID, None, False
        )
        _, stats = novelty_to_p_known(novelty, groups=votes[keys[0]][0])
        return _own_calibration(keys[0], stats)

    def _novelty_calibration(self, novelty_calibration: str | dict, labels_key: str) -> dict | None:
        """The novelty location and scale to use, or ``None`` to estimate them from the cells at hand."""
        if isinstance(novelty_calibration, dict):
            missing = {"scale", "overall", "location"} - set(novelty_calibration)
            if missing:
                raise ValueError(
                    f"novelty_calibration lacks {sorted(missing)}; pass another model's novelty_calibration_ dict."
                )
            return novelty_calibration
        if novelty_calibration not in ("auto", "own"):
            raise ValueError(f"novelty_calibration must be 'auto', 'own' or a dict, got {novelty_calibration!r}.")
        inherited = getattr(self, "novelty_calibration_", None)
        if novelty_calibration == "own" or not inherited or inherited.get("source") != "reference":
            return None
        if inherited.get("labels_key") != labels_key:
            logger.info(
                "The reference's novelty calibration is for %r, not %r; estimating it from the query cells.",
                inherited.get("labels_key"),
                labels_key,
            )
            return None
        return inherited

    def transfer_labels(
        self,
        labels_key: str | Sequence[str] | None = None,
        candidates: CandidateSource = "data_level",
        n_candidates: int = 250,
        top_k: int = 25,
        data_level_fallback: float | None = ANCHOR_AGREEMENT,
        unassigned_threshold: float | None = 0.5,
        over_clustering: str | Sequence | np.ndarray | None = None,
        min_prop: float = 0.0,
        key_added: str = "speciesvi",
        store_similarities: bool = False,
        batch_size: int | None = None,
        n_grid: int = DEFAULT_N_GRID,
        progress_bar: bool = False,
        novelty_calibration: Literal["auto", "own"] | dict = "auto",
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
        5. With ``over_clustering``, CellTypist-style majority voting: every cell gets the most frequent
           label ("Unassigned" included) of its cluster.

        Writes, for every labels key ``k``, ``target.obs[f"{key_added}_{k}"]`` (label),
        ``..._confidence`` and, with ``over_clustering``, ``..._majority_voting``; ``..._novelty`` and
        ``..._p_known`` once; ``target.uns[f"{key_added}_params"]`` with all parameters; with
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
            ``novelty_calibration_`` dict of another model with the same context labels. Estimates from
            these cells are kept in ``novelty_calibration_`` (saved with the model; a query model inherits
            them).

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

        cells = self._target_cells(np.arange(self.adata.n_obs), batch_size)
        clusters, clustering_name = (None, None)
        if over_clustering is not None:
            clusters, clustering_name = self._clusters(over_clustering, cells.z)
        sims, candidate_index, votes, novelty, checks = self._votes_and_novelty(
            cells, keys, n_candidates, top_k, n_grid, batch_size, progress_bar, candidates, data_level_fallback
        )
        calibration = self._novelty_calibration(novelty_calibration, keys[0])
        p_known, novelty_stats = novelty_to_p_known(novelty, groups=votes[keys[0]][0], calibration=calibration)
        if calibration is None:
            self.novelty_calibration_ = _own_calibration(keys[0], novelty_stats)
        unassigned = (
            np.zeros(cells.indices.shape[0], dtype=bool)
            if unassigned_threshold is None
            else p_known < unassigned_threshold
        )

        index = self.adata.obs_names
        result = pd.DataFrame(index=index)
        written = []
        for key in keys:
            label, share = votes[key]
            label = np.where(unassigned, UNASSIGNED, label).astype(object)
            confidence = share * p_known
            suffix = "" if len(keys) == 1 else f"_{key}"
            result[f"label{suffix}"] = pd.Categorical(label)
            result[f"confidence{suffix}"] = confidence
            result[f"vote_share{suffix}"] = share
            self.adata.obs[f"{key_added}_{key}"] = pd.Categorical(label)
            self.adata.obs[f"{key_added}_{key}_confidence"] = confidence
            written += [f"{key_added}_{key}", f"{key_added}_{key}_confidence"]
            if clusters is not None:
                voted = majority_voting(label, clusters, min_prop=min_prop)
                result[f"majority_voting{suffix}"] = pd.Categorical(voted)
                self.adata.obs[f"{key_added}_{key}_majority_voting"] = pd.Categorical(voted)
                written.append(f"{key_added}_{key}_majority_voting")
        result["p_known"] = p_known
        result["novelty"] = novelty
        result["best_similarity"] = sims[:, 0]
        self.adata.obs[f"{key_added}_novelty"] = novelty
        self.adata.obs[f"{key_added}_p_known"] = p_known
        written += [f"{key_added}_novelty", f"{key_added}_p_known"]
        if store_similarities:
            self.adata.obsm[f"{key_added}_similarity"] = sims.astype(np.float32)
            self.adata.obsm[f"{key_added}_similarity_index"] = candidate_index
        self.adata.uns[f"{key_added}_params"] = {
            "labels_key": keys,
            "candidates": candidates,
            "n_candidates": int(n_candidates),
            "top_k": int(top_k),
            "data_level_fallback": "None" if data_level_fallback is None else float(data_level_fallback),
            "anchor_check": checks,
            "unassigned_threshold": "None" if unassigned_threshold is None else float(unassigned_threshold),
            "over_clustering": "None" if clustering_name is None else clustering_name,
            "min_prop": float(min_prop),
            "n_grid": int(n_grid),
            "novelty_scale": novelty_stats["scale"],
            "novelty_sds": novelty_stats["sds"],
            "novelty_location": {str(k): v for k, v in novelty_stats["location"].items()},
            "novelty_group_scale": {str(k): v for k, v in novelty_stats["group_scale"].items()},
            "novelty_calibration": "own" if calibration is None else str(calibration.get("source", "given")),
            "n_unassigned": int(unassigned.sum()),
            "store_similarities": bool(store_similarities),
            "obs_keys": written,
        }
        logger.info(
            "transfer_labels: %d of %d target cells Unassigned (novelty scale %.3f nats per homologous count)",
            int(unassigned.sum()),
            unassigned.shape[0],
            novelty_stats["scale"],
        )
        return result

    def transfer_labels_cell(
        self,
        index: int,
        labels_key: str | Sequence[str] | None = None,
        batch_size: int | None = None,
    ) -> pd.DataFrame:
        """Every context cell ranked by its similarity to one target cell.

        Parameters
        ----------
        index
            Position of the target cell in the target AnnData (negative positions count from the end).
        labels_key
            Context ``obs`` column(s) to report; defaults to the context model's ``labels_key``.
        batch_size
            As in :meth:`similarity`.

        Returns
        -------
        pandas.DataFrame
            One row per context cell, most similar first, indexed by the context ``obs_names``: the label
            column(s), ``context_index`` (position in the context AnnData) and ``similarity``.

        Examples
        --------
        >>> ranking = target.transfer_labels_cell(0)
        >>> ranking.head(25)["cell_ontology_class"].value_counts()
        """
        if isinstance(index, bool) or not isinstance(index, int | np.integer):
            raise ValueError(f"index must be an integer position of a target cell, got {index!r}.")
        n_obs = self.adata.n_obs
        if not -n_obs <= index < n_obs:
            raise ValueError(f"index {index} is out of range for the {n_obs} target cells.")
        keys = self._context_label_keys(labels_key)
        n_context = self.module.context_z_mean.shape[0]
        sims, order = self.similarity(
            indices=[int(index) % n_obs], candidates=np.arange(n_context)[None], batch_size=batch_size
        )
        order = order[0]
        frame = pd.DataFrame(
            {key: self._context_label_column(key).to_numpy()[order] for key in keys},
            index=pd.Index(self._context_obs_names()[order], name="context_cell"),
        )
        frame["context_index"] = order
        frame["similarity"] = sims[0]
        return frame

    def cell_type_similarity(
        self,
        target_labels_key: str | None = None,
        context_labels_key: str | None = None,
        n_target: int = 2000,
        n_context: int = 50,
        scale: Literal["none", "max", "min_max"] = "none",
        key_added: str = "speciesvi",
        batch_size: int | None = None,
        random_state: int | None = None,
    ) -> pd.DataFrame:
        """Similarity of every target cell type to every context cell type.

        For each target type, up to ``n_target`` of its cells are sampled; each sampled cell is scored
        (:meth:`similarity`) against ``n_context`` context cells sampled from every context type. The entry
        of a (target type, context type) pair is the mode (histogram peak) of those scores: the typical
        excess negative log-likelihood, in nats, of a target cell of that type explained by a context cell
        of that type. The mode is robust to the few badly matched cells of a type.

        Parameters
        ----------
        target_labels_key
            Target ``obs`` column with the target types. Defaults to the labels written by
            :meth:`transfer_labels` (``f"{key_added}_{context_labels_key}"``); "Unassigned" cells are left out.
        context_labels_key
            Context ``obs`` column; defaults to the context model's ``labels_key``.
        n_target
            Target cells sampled per target type (all cells of smaller types).
        n_context
            Context cells sampled per context type for every sampled target cell (all cells of smaller types).
        scale
            ``"none"``: the modes in nats (lower = more similar); ``"min_max"``: per row,
            ``(max - s) / (max - min)``, so the most similar context type scores 1 and the least 0;
            ``"max"``: per row, ``1 - s / max``, 0 for the least similar type.
        key_added
            ``key_added`` of :meth:`transfer_labels`, to find the default target labels.
        batch_size
            As in :meth:`similarity`.
        random_state
            Seed of the sampling; defaults to ``scvi.settings.seed``.

        Returns
        -------
        pandas.DataFrame
            Target types (rows) x context types (columns).

        Examples
        --------
        >>> target.transfer_labels()
        >>> table = target.cell_type_similarity(scale="min_max")
        >>> table.idxmax(axis=1)  # the most similar context type of every target type
        """
        if scale not in ("none", "max", "min_max"):
            raise ValueError(f"scale must be 'none', 'max' or 'min_max', not {scale!r}.")
        if n_target < 1 or n_context < 1:
            raise ValueError(f"n_target and n_context must be positive, got {n_target} and {n_context}.")
        context_key = self._context_label_keys(context_labels_key)[0]
        if target_labels_key is None:
            target_labels_key = f"{key_added}_{context_key}"
            if target_labels_key not in self.adata.obs:
                raise ValueError(
                    f"The target AnnData has no obs[{target_labels_key!r}]; run transfer_labels("
                    f"labels_key={context_key!r}, key_added={key_added!r}) first or pass target_labels_key=."
                )
        elif target_labels_key not in self.adata.obs:
            raise ValueError(f"The target AnnData has no obs column {target_labels_key!r}.")
        rng = np.random.default_rng(scvi.settings.seed if random_state is None else random_state)
        target_column = self.adata.obs[target_labels_key]
        target_labels = target_column.astype(str).to_numpy(dtype=object)
        usable = target_column.notna().to_numpy() & ~np.isin(target_labels, [UNASSIGNED, HETEROGENEOUS])
        context_labels = self._context_labels(context_key)
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
        cells_idx = np.concatenate(sampled)
        candidates = np.empty((cells_idx.size, sum(widths)), dtype=np.int64)
        start = 0
        for m, w in zip(members, widths, strict=True):
            # an independent sample of w cells of this context type for every target cell
            keys = rng.random((cells_idx.size, m.size)) if m.size * cells_idx.size <= 5e7 else None
            if keys is not None:
                candidates[:, start : start + w] = m[np.argpartition(keys, w - 1, axis=1)[:, :w]]
            else:
                for row in range(cells_idx.size):
                    candidates[row, start : start + w] = rng.choice(m, size=w, replace=False)
            start += w
        cells = self._target_cells(cells_idx, batch_size)
        sims, _ = self._similarities(cells, candidates, candidates.shape[1], DEFAULT_N_GRID, batch_size, False)
        bounds = np.concatenate([[0], np.cumsum(widths)])
        types_of_cells = target_labels[cells_idx]
        table = pd.DataFrame(
            [
                [
                    histogram_mode(sims[types_of_cells == t, bounds[c] : bounds[c + 1]])
                    for c in range(len(context_types))
                ]
                for t in target_types
            ],
            index=pd.Index(target_types, name=target_labels_key),
            columns=pd.Index(context_types, name=context_key),
        )
        if scale == "min_max":
            low, high = table.min(axis=1), table.max(axis=1)
            table = table.rsub(high, axis=0).div((high - low).replace(0, np.nan), axis=0)
        elif scale == "max":
            table = 1 - table.div(table.max(axis=1).replace(0, np.nan), axis=0)
        return table


def _leiden(z: np.ndarray) -> np.ndarray:
    """Leiden clusters of a latent space (15-nearest-neighbour graph, resolution 1)."""
    import anndata as ad
    import scanpy as sc

    tmp = ad.AnnData(obsm={"X_latent": np.asarray(z, dtype=np.float32)}, shape=(z.shape[0], 0))
    sc.pp.neighbors(tmp, use_rep="X_latent", random_state=0)
    try:
        sc.tl.leiden(tmp, flavor="igraph", n_iterations=2, directed=False, random_state=0)
    except ImportError as err:
        raise ValueError(
            "over_clustering='leiden' needs the igraph and leidenalg packages (pip install igraph leidenalg); "
            "or pass an obs key / per-cell cluster ids."
        ) from err
    return tmp.obs["leiden"].astype(str).to_numpy(dtype=object)
