"""Similarity, label transfer and cell-type similarity of a TargetVI (scSpecies steps 5-7)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import torch
from scipy import sparse
from scvi import REGISTRY_KEYS

from ..module._similarity import DEFAULT_N_GRID, CountsCSR, candidate_log_likelihood

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

#: Exact (brute-force) latent neighbour search below this many target x context pairs, pynndescent above.
EXACT_KNN_MAX_PAIRS = 2e8


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


class SimilarityMixin:
    """Decoder-likelihood similarity of target cells to context cells, and what builds on it.

    Mixed into :class:`~speciesvi.TargetVI`; needs ``self.context_model``, ``self.module.decoder`` and
    ``self.module.context_z_mean``.
    """

    # -- inputs ----------------------------------------------------------------------------------
    def _target_indices(self, indices: Sequence[int] | None) -> np.ndarray:
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

    def _target_counts(self, indices: np.ndarray) -> CountsCSR:
        x = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        if sparse.issparse(x):
            return CountsCSR.from_scipy(sparse.csr_matrix(x)[indices])
        return CountsCSR.from_scipy(sparse.csr_matrix(np.asarray(x[indices])))

    def _target_batches(self, indices: np.ndarray) -> np.ndarray:
        return np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)).reshape(-1)[indices]

    def _encode_target(self, indices: np.ndarray, batch_size: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Posterior means of z and of the log library size of the target cells ``indices``."""
        z = self.get_latent_representation(indices=indices, batch_size=batch_size)
        log_library = self.get_latent_representation(indices=indices, representation="library", batch_size=batch_size)
        return z, log_library[:, 0]

    def _context_latent(self) -> np.ndarray:
        return self.module.context_z_mean.detach().cpu().numpy()

    # -- similarity ------------------------------------------------------------------------------
    @torch.inference_mode()
    def _log_likelihoods(
        self,
        indices: np.ndarray,
        candidates: np.ndarray | None,
        n_candidates: int,
        n_grid: int,
        batch_size: int | None,
        progress_bar: bool,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Candidate log-likelihoods ``(n, k)``, own-latent log-likelihoods ``(n,)`` and the candidates."""
        z, log_library = self._encode_target(indices, batch_size)
        context_z = self._context_latent()
        if candidates is None:
            if not 1 <= n_candidates <= context_z.shape[0]:
                raise ValueError(
                    f"n_candidates must be between 1 and the {context_z.shape[0]} context cells, got {n_candidates}."
                )
            candidates = latent_neighbors(z, context_z, n_candidates)
        else:
            candidates = np.asarray(candidates)
            if candidates.ndim == 1:
                candidates = np.broadcast_to(candidates, (indices.shape[0], candidates.shape[0]))
            if candidates.ndim != 2 or candidates.shape[0] != indices.shape[0]:
                raise ValueError(
                    f"candidates must have one row per target cell ({indices.shape[0]}), got shape {candidates.shape}."
                )
            if candidates.size and (candidates.min() < 0 or candidates.max() >= context_z.shape[0]):
                raise ValueError(f"Candidate context indices must lie in [0, {context_z.shape[0]}).")
            candidates = candidates.astype(np.int64)
        counts = self._target_counts(indices)
        batches = torch.as_tensor(self._target_batches(indices))
        log_l = torch.as_tensor(log_library)
        decoder = self.module.decoder
        device = self.device
        max_elements = None if batch_size is None else max(1, batch_size) * counts.n_genes
        kwargs = {"n_grid": n_grid} if max_elements is None else {"n_grid": n_grid, "max_elements": max_elements}
        pair = candidate_log_likelihood(
            decoder,
            torch.as_tensor(context_z, device=device),
            torch.as_tensor(candidates, device=device),
            counts,
            batches,
            log_l,
            progress_bar=progress_bar,
            **kwargs,
        )
        own = candidate_log_likelihood(
            decoder,
            torch.as_tensor(z, device=device),
            torch.arange(indices.shape[0], device=device).unsqueeze(1),
            counts,
            batches,
            log_l,
            dense="exact",
            **kwargs,
        )
        return pair.cpu().numpy(), own.cpu().numpy()[:, 0], candidates

    def similarity(
        self,
        indices: Sequence[int] | None = None,
        candidates: np.ndarray | None = None,
        n_candidates: int = 250,
        batch_size: int | None = None,
        n_grid: int = DEFAULT_N_GRID,
        progress_bar: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Likelihood-based similarity of target cells to context cells (lower is more similar).

        ``s(i, j) = NLL(x_i | decoder_T(z_j, b_i), l_i) - NLL(x_i | decoder_T(z_i, b_i), l_i)``: how much
        worse the target decoder explains target cell ``i``'s counts from context cell ``j``'s latent
        code than from the cell's own, under the cell's batch ``b_i`` and library size ``l_i``. ``z`` are
        posterior means (``z_j`` from the context model), ``l_i = exp`` of the library posterior mean. ``s``
        is 0 for a context cell that explains the counts as well as the cell's own code and can be
        negative for a better one.

        Each context cell is decoded once per target batch; see
        :func:`~speciesvi.module._similarity.candidate_log_likelihood` for the fast kernel.

        Parameters
        ----------
        indices
            Target cells (positions in the target AnnData, or a boolean mask); defaults to all.
        candidates
            Context cell indices to score, ``(n_cells, k)`` (or ``(k,)`` for the same ones for every cell);
            defaults to the ``n_candidates`` nearest context cells in the aligned latent space (euclidean).
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
        >>> best_context_cell_of_first_target_cell = context.adata.obs_names[idx[0, 0]]
        """
        indices = self._target_indices(indices)
        pair, own, candidates = self._log_likelihoods(
            indices, candidates, n_candidates, n_grid, batch_size, progress_bar
        )
        sims = (own[:, None] - pair).astype(np.float32)
        order = np.argsort(sims, axis=1, kind="stable")
        return np.take_along_axis(sims, order, 1), np.take_along_axis(candidates, order, 1)
