"""Likelihood similarity of target cells to context cells, and the latent-space candidate search."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.neighbors import NearestNeighbors

from ..module._similarity import CountsCSR, candidate_log_likelihood

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
        nn = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(index)
        return nn.kneighbors(query, return_distance=False).astype(np.int64)
    from pynndescent import NNDescent  # imported on first use: it compiles with numba on import

    graph = NNDescent(index, n_neighbors=min(max(30, k), index.shape[0] - 1), random_state=random_state)
    graph.prepare()
    neighbors, _ = graph.query(query, k=k)
    return neighbors.astype(np.int64)


def likelihood_similarity(
    decoder: torch.nn.Module,
    z: np.ndarray,
    log_library: np.ndarray,
    batches: np.ndarray,
    counts: CountsCSR,
    context_z: np.ndarray,
    candidates: np.ndarray,
    n_grid: int,
    max_elements: int | None = None,
    device: torch.device | str = "cpu",
    progress_bar: bool = False,
) -> np.ndarray:
    """``s(i, j) = NLL(x_i | decoder(z_j, b_i), l_i) - NLL(x_i | decoder(z_i, b_i), l_i)`` for every candidate.

    How much worse (in nats) ``decoder`` explains target cell ``i``'s counts from context cell ``j``'s latent
    code than from the cell's own, under the cell's batch ``b_i`` and library size ``l_i``; see
    :func:`~speciesvi.module._similarity.candidate_log_likelihood` for the kernel.

    Parameters
    ----------
    decoder
        The target decoder.
    z, log_library, batches, counts
        The target cells: posterior means of z ``(n, d)`` and of the log library size ``(n,)``, batch codes and
        counts.
    context_z
        Posterior means of z of every context cell.
    candidates
        ``(n, k)`` context cells to score for every target cell.
    n_grid
        Log-library grid points per target batch for the interpolated dense part of the likelihood.
    max_elements
        Elements decoded at once; defaults to the kernel's.
    device
        Where to decode.
    progress_bar
        Show a progress bar over the chunks.

    Returns
    -------
    numpy.ndarray
        ``(n, k)`` similarities in the order of ``candidates`` (lower = more similar).
    """
    kwargs = {"n_grid": n_grid}
    if max_elements is not None:
        kwargs["max_elements"] = max_elements
    batches = torch.as_tensor(batches)
    log_library = torch.as_tensor(log_library)
    pair = candidate_log_likelihood(
        decoder,
        torch.as_tensor(context_z, device=device),
        torch.as_tensor(candidates, device=device),
        counts,
        batches,
        log_library,
        progress_bar=progress_bar,
        **kwargs,
    )
    n = z.shape[0]
    own = candidate_log_likelihood(
        decoder,
        torch.as_tensor(z, device=device),
        torch.arange(n, device=device).unsqueeze(1),
        counts,
        batches,
        log_library,
        dense="exact",
        **kwargs,
    )
    return (own - pair).cpu().numpy()


def sort_by_similarity(similarities: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Similarities and candidates of every row, most similar first (stable for ties).

    Examples
    --------
    >>> sort_by_similarity(np.array([[0.5, -1.0, 2.0]]), np.array([[7, 8, 9]]))[1].tolist()
    [[8, 7, 9]]
    """
    order = np.argsort(similarities, axis=1, kind="stable")
    return np.take_along_axis(similarities, order, 1), np.take_along_axis(candidates, order, 1)
