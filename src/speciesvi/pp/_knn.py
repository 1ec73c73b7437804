"""Cosine k-nearest-neighbour search between two sparse matrices: exact (scikit-learn) or approximate (pynndescent)."""

from __future__ import annotations

import logging
import os
from typing import Literal

import numpy as np
from scipy import sparse

logger = logging.getLogger(__name__)

KnnMethod = Literal["auto", "exact", "pynndescent"]

# Exact search costs n_query * n_index sparse dot products; below this many pairs it is fast and has no
# approximation error (about 20k x 20k cells).
EXACT_MAX_PAIRS = 4e8
# Degree of the pynndescent search graph over the context cells.
_INDEX_DEGREE = 30


def default_n_jobs() -> int:
    """Number of usable cores (the process' CPU affinity where the platform reports it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)


def choose_method(method: KnnMethod, n_query: int, n_index: int) -> Literal["exact", "pynndescent"]:
    """Resolve ``"auto"``: exact search for small inputs, pynndescent for large ones."""
    if method == "auto":
        return "exact" if float(n_query) * float(n_index) <= EXACT_MAX_PAIRS else "pynndescent"
    if method not in ("exact", "pynndescent"):
        raise ValueError(f"method must be 'auto', 'exact' or 'pynndescent', not {method!r}.")
    return method


def cosine_knn(
    query: sparse.csr_matrix,
    index: sparse.csr_matrix,
    k: int,
    method: Literal["exact", "pynndescent"],
    *,
    n_jobs: int | None = None,
    random_state: int | None = 0,
    epsilon: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest ``index`` rows of every ``query`` row by cosine distance, nearest first.

    Both matrices must be CSR with L2-normalised, non-zero rows. Returns ``(indices int32, distances float32)``,
    each ``n_query x k``.
    """
    n_jobs = default_n_jobs() if n_jobs is None else n_jobs
    if method == "exact":
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute", n_jobs=n_jobs).fit(index)
        distances, indices = nn.kneighbors(query)
    else:
        import numba
        from pynndescent import NNDescent

        # pynndescent needs scipy.sparse.csr_matrix (not csr_array) with sorted indices. "dot" on unit rows is the
        # cosine distance computed by a plain sparse dot product; results come back corrected to 1 - cos.
        index = sparse.csr_matrix(index, dtype=np.float32)
        query = sparse.csr_matrix(query, dtype=np.float32)
        index.sort_indices()
        query.sort_indices()
        threads = numba.get_num_threads()
        try:
            logger.info("homolog_neighbors: building the pynndescent index on %d context cells", index.shape[0])
            nnd = NNDescent(
                index,
                metric="cosine",
                n_neighbors=_INDEX_DEGREE,
                random_state=random_state,
                n_jobs=n_jobs,
                low_memory=True,
                parallel_batch_queries=n_jobs != 1,
            )
            logger.info("homolog_neighbors: querying %d target cells (k=%d)", query.shape[0], k)
            indices, distances = nnd.query(query, k=k, epsilon=epsilon)
        finally:
            numba.set_num_threads(threads)
    return np.ascontiguousarray(indices, dtype=np.int32), np.ascontiguousarray(distances, dtype=np.float32)
