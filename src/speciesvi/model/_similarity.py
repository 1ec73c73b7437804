"""Similarity of a TargetVI's cells to the context cells, and cell-type similarity (scSpecies steps 5 and 7)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import scvi
from scipy import sparse
from scvi import REGISTRY_KEYS

from ..module import NEIGHBORS_KEY
from ..module._similarity import DEFAULT_N_GRID, CountsCSR
from ..pp._homologs import homologous_gene_positions
from ..tl._cell_types import sample_type_pairs, type_similarity_table
from ..tl._labels import HETEROGENEOUS, UNASSIGNED
from ..tl._results import CELL_TYPE_SIMILARITY_KEY, check_key_added, write_result
from ..tl._similarity import latent_neighbors, likelihood_similarity, sort_by_similarity
from ..tl._transfer import CandidateSource
from ._encoding import encode_posteriors

logger = logging.getLogger(__name__)

#: Cells encoded per minibatch when no ``batch_size`` is given.
ENCODE_BATCH_SIZE = 1024


@dataclass
class TargetCells:
    """What the similarity kernels need of a set of target cells."""

    indices: np.ndarray
    z: np.ndarray
    log_library: np.ndarray
    batches: np.ndarray
    counts: CountsCSR


class SimilarityMixin:
    """Decoder-likelihood similarity of target cells to context cells, and cell-type similarity.

    Mixed into :class:`~speciesvi.TargetVI`; reads the context through
    :class:`~speciesvi.model._context_access.ContextAccessMixin` and computes with the functions of
    :mod:`speciesvi.tl`.
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

    def _target_cells(self, indices: np.ndarray, batch_size: int | None) -> TargetCells:
        """Posterior means of z and log library, batches and sparse counts of target cells (one encoding pass)."""
        posteriors = encode_posteriors(self, indices, batch_size or ENCODE_BATCH_SIZE)
        x = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        rows = sparse.csr_matrix(x)[indices] if sparse.issparse(x) else sparse.csr_matrix(np.asarray(x[indices]))
        return TargetCells(
            indices, posteriors.z_mean, posteriors.library_mean, posteriors.batches, CountsCSR.from_scipy(rows)
        )

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

    def _candidate_rows(self, cells: TargetCells, source: CandidateSource, n_candidates: int) -> np.ndarray | None:
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

    def _homologous_genes(self) -> tuple[np.ndarray, np.ndarray]:
        """Positions of the homologous genes in the target and (same order) in the context genes."""
        target_idx, context_idx = homologous_gene_positions(self.adata.var, self._context_var_names())
        if target_idx.size == 0:
            raise ValueError("No target gene has a homolog among the context model's genes.")
        return target_idx, context_idx

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

    # -- similarity ------------------------------------------------------------------------------
    def _similarities(
        self,
        cells: TargetCells,
        candidates: np.ndarray | None,
        n_candidates: int,
        n_grid: int,
        batch_size: int | None,
        progress_bar: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Unsorted similarities ``(n, k)`` of ``cells`` to their candidates, and the candidates."""
        context_z = self._context_latent()
        if candidates is None:
            if not 1 <= n_candidates <= context_z.shape[0]:
                raise ValueError(
                    f"n_candidates must be between 1 and the {context_z.shape[0]} context cells, got {n_candidates}."
                )
            candidates = latent_neighbors(cells.z, context_z, n_candidates)
        else:
            candidates = self._check_candidates(candidates, cells.indices.shape[0])
        sims = likelihood_similarity(
            self.module.decoder,
            cells.z,
            cells.log_library,
            cells.batches,
            cells.counts,
            context_z,
            candidates,
            n_grid=n_grid,
            max_elements=None if batch_size is None else max(1, int(batch_size)) * cells.counts.n_genes,
            device=self.device,
            progress_bar=progress_bar,
        )
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
        :func:`~speciesvi.tl._similarity.likelihood_similarity`.

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
        sims, candidates = sort_by_similarity(sims, candidates)
        return sims.astype(np.float32), candidates

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
        n_context = self._context_n_obs()
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
        transfer_key_added: str = "speciesvi",
        batch_size: int | None = None,
        random_state: int | None = None,
        key_added: str | None = CELL_TYPE_SIMILARITY_KEY,
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
            :meth:`transfer_labels` (``f"{transfer_key_added}_{context_labels_key}"``); "Unassigned" cells are
            left out.
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
        transfer_key_added
            ``key_added`` of :meth:`transfer_labels`, to find the default target labels.
        batch_size
            As in :meth:`similarity`.
        random_state
            Seed of the sampling; defaults to ``scvi.settings.seed``.
        key_added
            ``.uns`` key of the target AnnData the table and its parameters are written to (read them back
            with :func:`speciesvi.tl.read_cell_type_similarity`, also from an h5ad file); ``None`` writes
            nothing.

        Returns
        -------
        pandas.DataFrame
            Target types (rows) x context types (columns); ``DataFrame.attrs["params"]`` holds the parameters.

        Examples
        --------
        >>> target.transfer_labels()
        >>> table = target.cell_type_similarity(scale="min_max")
        >>> table.idxmax(axis=1)  # the most similar context type of every target type
        >>> speciesvi.tl.read_cell_type_similarity(human)  # the same table, kept in human.uns
        """
        if scale not in ("none", "max", "min_max"):
            raise ValueError(f"scale must be 'none', 'max' or 'min_max', not {scale!r}.")
        if n_target < 1 or n_context < 1:
            raise ValueError(f"n_target and n_context must be positive, got {n_target} and {n_context}.")
        check_key_added(key_added)
        context_key = self._context_label_keys(context_labels_key)[0]
        if target_labels_key is None:
            target_labels_key = f"{transfer_key_added}_{context_key}"
            if target_labels_key not in self.adata.obs:
                raise ValueError(
                    f"The target AnnData has no obs[{target_labels_key!r}]; run transfer_labels("
                    f"labels_key={context_key!r}, key_added={transfer_key_added!r}) first, or pass "
                    "transfer_key_added= (the key_added of that transfer) or target_labels_key=."
                )
        elif target_labels_key not in self.adata.obs:
            raise ValueError(f"The target AnnData has no obs column {target_labels_key!r}.")
        rng = np.random.default_rng(scvi.settings.seed if random_state is None else random_state)
        target_column = self.adata.obs[target_labels_key]
        target_labels = target_column.astype(str).to_numpy(dtype=object)
        target_labels[target_column.isna().to_numpy() | np.isin(target_labels, [UNASSIGNED, HETEROGENEOUS])] = None
        pairs = sample_type_pairs(target_labels, self._context_labels(context_key), n_target, n_context, rng)
        cells = self._target_cells(pairs.cells, batch_size)
        sims, _ = self._similarities(
            cells, pairs.candidates, pairs.candidates.shape[1], DEFAULT_N_GRID, batch_size, False
        )
        table = type_similarity_table(sims, pairs, target_labels, scale, target_labels_key, context_key)
        table.attrs["params"] = {
            "target_labels_key": target_labels_key,
            "context_labels_key": context_key,
            "n_target": int(n_target),
            "n_context": int(n_context),
            "scale": scale,
            "random_state": "None" if random_state is None else int(random_state),
        }
        if key_added is not None:
            write_result(self.adata, key_added, "cell_type_similarity", table, table.attrs["params"])
        return table
