"""Cosine k-nearest-neighbour search between two sparse matrices with unit-length rows.

Three strategies, chosen by the number of cell pairs (``"auto"``):

``"exact"``
    scikit-learn brute force on the sparse rows (chunked pairwise cosine distances); up to 4e8 pairs.
``"sketch"`` and ``"pynndescent"``
    Candidates from a low-rank sketch, re-ranked exactly:

    1. a truncated SVD (scikit-learn, fitted on a sample of rows of both matrices) projects the rows to
       ``SVD_COMPONENTS`` dimensions;
    2. ``OVERSAMPLE * k`` candidates per query by cosine distance in that space: scikit-learn's chunked brute
       force (``"sketch"``, up to 4e10 pairs) or pynndescent's approximate search (``"pynndescent"``, beyond);
    3. the exact cosine distance on the sparse rows re-ranks the candidates and the ``k`` best are kept.

    Distances returned are exact cosine distances on the input rows; only the candidate set is approximate.

Why not pynndescent on the sparse rows directly: with thousands of genes and k = 250 it took minutes for 10k x 10k
cells on two cores. Why brute force on the sketch before pynndescent: the target cells are out-of-distribution
queries for a graph built on context cells (another species), and on 100k x 100k tiled Baron cells pynndescent's
graph search recovered only a few percent of the true nearest context cells, while brute force on the sketch
recovers ~95 % of the 25 nearest (see ``benchmarks/results/homolog_neighbors.md``).
"""

from __future__ import annotations

import logging
import os
from typing import Literal

import numba
import numpy as np
from scipy import sparse
from sklearn.preprocessing import normalize

logger = logging.getLogger(__name__)

KnnMethod = Literal["auto", "exact", "sketch", "pynndescent"]

# "auto": exact search up to 4e8 cell pairs (20k x 20k cells: under a minute on 2 cores, as fast as the sketch);
# candidates by brute force in the sketch up to 4e10 pairs (200k x 200k cells: minutes); pynndescent beyond.
EXACT_MAX_PAIRS = 4e8
SKETCH_MAX_PAIRS = 4e10
# Settings of the approximate search.
SVD_COMPONENTS = 100
SVD_SAMPLE_ROWS = 10_000
OVERSAMPLE = 2.0
INDEX_DEGREE = 30
_CHUNK = 10_000


def default_n_jobs() -> int:
    """Number of usable cores (the process' CPU affinity where the platform reports it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)


def choose_method(method: KnnMethod, n_query: int, n_index: int) -> Literal["exact", "sketch", "pynndescent"]:
    """Resolve ``"auto"`` by the number of cell pairs: exact, then sketch, then pynndescent as inputs grow."""
    if method == "auto":
        pairs = float(n_query) * float(n_index)
        return "exact" if pairs <= EXACT_MAX_PAIRS else "sketch" if pairs <= SKETCH_MAX_PAIRS else "pynndescent"
    if method not in ("exact", "sketch", "pynndescent"):
        raise ValueError(f"method must be 'auto', 'exact', 'sketch' or 'pynndescent', not {method!r}.")
    return method


@numba.njit(parallel=True, fastmath=True, cache=True)
def _sparse_cosine_distances(q_indptr, q_indices, q_data, r_indptr, r_indices, r_data, candidates, n_features):
    """``1 - <q_i, r_c>`` for every query row i and each of its candidate rows c (unit-length rows)."""
    n_rows, n_cand = candidates.shape
    out = np.empty((n_rows, n_cand), dtype=np.float32)
    for i in numba.prange(n_rows):
        dense = np.zeros(n_features, dtype=np.float32)
        for p in range(q_indptr[i], q_indptr[i + 1]):
            dense[q_indices[p]] = q_data[p]
        for j in range(n_cand):
            c = candidates[i, j]
            total = np.float32(0.0)
            for p in range(r_indptr[c], r_indptr[c + 1]):
                total += r_data[p] * dense[r_indices[p]]
            out[i, j] = np.float32(1.0) - total
    return out


def _exact(query: sparse.csr_matrix, index: sparse.csr_matrix, k: int, n_jobs: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute", n_jobs=n_jobs).fit(index)
    distances, indices = nn.kneighbors(query)
    return indices, distances


def _sketch(query, index, n_components: int, random_state: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Unit-length low-rank projections of both matrices from a truncated SVD fitted on a sample of their rows."""
    from sklearn.decomposition import TruncatedSVD

    rng = np.random.default_rng(random_state)
    sample = sparse.vstack(
        [m[np.sort(rng.choice(m.shape[0], min(m.shape[0], SVD_SAMPLE_ROWS), replace=False))] for m in (query, index)]
    )
    n_components = max(1, min(n_components, sample.shape[1] - 1, sample.shape[0] - 1))
    svd = TruncatedSVD(n_components, algorithm="randomized", n_iter=4, random_state=random_state).fit(sample)
    basis = svd.components_.T.astype(np.float32)
    return normalize(np.asarray(query @ basis)), normalize(np.asarray(index @ basis))


def _rerank(query, index, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine distances to the candidates on the sparse rows; keep the ``k`` nearest, nearest first."""
    candidates = np.ascontiguousarray(candidates, dtype=np.int64)
    dist = _sparse_cosine_distances(
        query.indptr, query.indices, query.data, index.indptr, index.indices, index.data, candidates, index.shape[1]
    )
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(candidates, order, axis=1), np.take_along_axis(dist, order, axis=1)


def _approximate(
    query: sparse.csr_matrix,
    index: sparse.csr_matrix,
    k: int,
    strategy: Literal["sketch", "pynndescent"],
    n_jobs: int,
    random_state: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Candidates on the SVD sketch (brute force or pynndescent), then exact re-ranking on the sparse rows."""
    n_candidates = int(min(index.shape[0], max(k, np.ceil(OVERSAMPLE * k))))
    logger.info("homolog_neighbors: truncated SVD sketch (%d components)", SVD_COMPONENTS)
    query_sketch, index_sketch = _sketch(query, index, SVD_COMPONENTS, random_state)
    if strategy == "sketch":
        from sklearn.neighbors import NearestNeighbors

        # Unit rows: Euclidean order == cosine order, and scikit-learn's fast chunked (GEMM) search applies.
        search = NearestNeighbors(n_neighbors=n_candidates, algorithm="brute", metric="euclidean").fit(index_sketch)

        def find(rows: slice) -> np.ndarray:
            return search.kneighbors(query_sketch[rows], return_distance=False)
    else:
        from pynndescent import NNDescent

        logger.info("homolog_neighbors: pynndescent index on %d context cells", index.shape[0])
        search = NNDescent(
            index_sketch,
            metric="cosine",
            n_neighbors=INDEX_DEGREE,
            random_state=random_state,
            n_jobs=n_jobs,
            low_memory=True,
            parallel_batch_queries=n_jobs != 1,
        )

        def find(rows: slice) -> np.ndarray:
            return search.query(query_sketch[rows], k=n_candidates)[0]

    indices = np.empty((query.shape[0], k), dtype=np.int32)
    distances = np.empty((query.shape[0], k), dtype=np.float32)
    n_chunks = -(-query.shape[0] // _CHUNK)
    for i, start in enumerate(range(0, query.shape[0], _CHUNK), start=1):
        rows = slice(start, min(start + _CHUNK, query.shape[0]))
        logger.info("homolog_neighbors: %s search, chunk %d/%d", strategy, i, n_chunks)
        indices[rows], distances[rows] = _rerank(query[rows], index, find(rows), k)
    return indices, distances


def cosine_knn(
    query: sparse.csr_matrix,
    index: sparse.csr_matrix,
    k: int,
    method: Literal["exact", "sketch", "pynndescent"],
    *,
    n_jobs: int | None = None,
    random_state: int | None = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest ``index`` rows of every ``query`` row by cosine distance, nearest first.

    Both matrices must be CSR (float32) with L2-normalised, non-zero rows over the same columns. Returns
    ``(indices int32, distances float32)``, each ``n_query x k``.
    """
    n_jobs = default_n_jobs() if n_jobs is None or n_jobs < 1 else int(n_jobs)
    query = sparse.csr_matrix(query, dtype=np.float32)
    index = sparse.csr_matrix(index, dtype=np.float32)
    if method == "exact":
        indices, distances = _exact(query, index, k, n_jobs)
    else:
        from threadpoolctl import threadpool_limits

        threads = numba.get_num_threads()
        numba.set_num_threads(min(n_jobs, numba.config.NUMBA_NUM_THREADS))
        try:
            with threadpool_limits(limits=n_jobs):
                indices, distances = _approximate(query, index, k, method, n_jobs, random_state)
        finally:
            numba.set_num_threads(threads)
    return np.ascontiguousarray(indices, dtype=np.int32), np.ascontiguousarray(distances, dtype=np.float32)
