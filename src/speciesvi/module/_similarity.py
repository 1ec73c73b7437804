"""Decoder-likelihood similarity of target cells to candidate latent codes (scSpecies step 5).

For a target cell ``i`` (counts ``x_i``, batch ``b_i``, log library ``t_i``) and a candidate latent code
``z_j``, :func:`candidate_log_likelihood` evaluates ``log p(x_i | decoder(z_j, b_i), exp(t_i))`` without
the ``lgamma`` terms, which depend on the counts only and cancel in any difference between candidates.

The decoder output depends on the pair only through ``(j, b_i)``, so every needed ``(j, b)`` is decoded
once, in chunks of candidates (:mod:`._kernel_plan`). The log-likelihood is the sum of the two parts of
:mod:`._likelihood` (:func:`~._kernel_terms.decode_chunk` decodes a chunk):

* a **dense** part over all genes, the log-probability of a zero count, which depends on the cell only
  through its log library ``t``. It is smooth in ``t``: when many cells share a candidate it is evaluated
  with its exact derivative on a grid of log-library values spanning the batch and interpolated per cell
  (cubic Hermite); otherwise it is evaluated for every pair;
* a **sparse** part over the cell's non-zero genes only, gathered from the chunk's decoded matrix.

Two backends evaluate the same terms of the core: ``"torch"`` (any device; :mod:`._kernel_terms`, array by
array) and ``"numba"`` (CPU; :mod:`._kernel_numba`, the core's element functions compiled into fused loops
with a tabulated softplus, several times faster on a CPU).

:func:`profile_log_likelihood` evaluates multinomial log-likelihoods ``sum_g x_g log p_jg`` of candidate
profiles the same way. Nothing here knows about AnnData; counts come as a :class:`CountsCSR`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

import torch
from scvi.utils import track

from . import _kernel_numba
from ._components import ExpressionDecoder
from ._counts import CountsCSR
from ._kernel_plan import DenseMethod, check_pairs, group_by_code, plan_jobs
from ._kernel_terms import (
    DecodedChunk,
    decode_chunk,
    dense_grid,
    dense_pairs,
    hermite_interpolate,
    sparse_dot,
    sparse_part,
)
from ._likelihood import EPS, count_log_prob_sum
from ._modes import predicting

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_ELEMENTS",
    "DEFAULT_N_GRID",
    "EPS",
    "Backend",
    "CountsCSR",
    "DecodedChunk",
    "DenseMethod",
    "candidate_log_likelihood",
    "count_log_prob_sum",
    "decode_chunk",
    "hermite_interpolate",
    "profile_log_likelihood",
    "reference_log_likelihood",
]

#: Default bound on the number of float32 elements of one intermediate array (``2**22`` = 16 MiB).
DEFAULT_MAX_ELEMENTS = 2**22
#: Default number of log-library grid points per target batch (cubic Hermite; about 0.01 nats on real data).
DEFAULT_N_GRID = 8

Backend = Literal["auto", "numba", "torch"]


def _resolve_backend(backend: str, device: torch.device) -> Literal["numba", "torch"]:
    if backend not in ("auto", "numba", "torch"):
        raise ValueError(f"backend must be 'auto', 'numba' or 'torch', not {backend!r}.")
    if backend == "numba" and device.type != "cpu":
        raise ValueError("backend='numba' runs on the CPU; use backend='torch' for tensors on other devices.")
    if backend == "auto":
        return "numba" if device.type == "cpu" else "torch"
    return backend


# -- public kernels ---------------------------------------------------------------------------------
@torch.inference_mode()
def candidate_log_likelihood(
    decoder: ExpressionDecoder,
    z_candidates: torch.Tensor,
    candidates: torch.Tensor,
    counts: CountsCSR,
    batch_index: torch.Tensor,
    log_library: torch.Tensor,
    *,
    n_grid: int = DEFAULT_N_GRID,
    dense: DenseMethod = "auto",
    backend: Backend = "auto",
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    chunk_size: int | None = None,
    progress_bar: bool = False,
) -> torch.Tensor:
    """Log-likelihood of every cell's counts under the decoder at each of its candidates' latent codes.

    ``out[i, c] = log p(x_i | decoder(z_candidates[candidates[i, c]], batch_index[i]), exp(log_library[i]))``
    without the ``lgamma`` terms (which depend on ``x_i`` only). Every ``(candidate, batch)`` pair is decoded
    once; see the module docstring for the dense/sparse split and the log-library grid.

    Parameters
    ----------
    decoder
        An :class:`~speciesvi.module.ExpressionDecoder` (NB or ZINB; any dispersion). Put in eval mode here
        and restored afterwards.
    z_candidates
        Latent codes the candidates index into, ``(n_codes, n_latent)``.
    candidates
        Rows of ``z_candidates`` for every cell, ``(n_cells, k)``.
    counts
        Counts of the cells, ``(n_cells, n_genes)``, sparse.
    batch_index
        Batch of every cell, ``(n_cells,)``.
    log_library
        Log library size of every cell, ``(n_cells,)``.
    n_grid
        Log-library grid points per batch for the interpolated dense part (at least 2).
    dense
        How the dense part is evaluated: ``"grid"`` (interpolated), ``"exact"`` (per pair) or ``"auto"``
        (per chunk, whichever needs fewer evaluations: the grid when a chunk's candidates are shared by
        more than ``1.5 * n_grid`` cells each on average).
    backend
        ``"numba"`` (CPU), ``"torch"`` (any device) or ``"auto"`` (numba for CPU tensors).
    max_elements
        Bound on the size of intermediate arrays (float32 elements); memory stays at a small multiple.
    chunk_size
        Candidates decoded at once; defaults to ``max_elements // n_genes``.
    progress_bar
        Show a progress bar over the chunks.

    Returns
    -------
    torch.Tensor
        ``(n_cells, k)`` float64 on the device of ``z_candidates``.

    Examples
    --------
    >>> from scipy import sparse
    >>> decoder = ExpressionDecoder(n_latent=2, n_output=5, n_batch=1)
    >>> counts = CountsCSR.from_scipy(sparse.random(3, 5, density=0.5, format="csr") * 10)
    >>> ll = candidate_log_likelihood(
    ...     decoder, torch.randn(4, 2), torch.tensor([[0, 1], [2, 3], [0, 3]]), counts, torch.zeros(3), torch.ones(3)
    ... )
    >>> ll.shape
    torch.Size([3, 2])
    """
    device = z_candidates.device
    candidates = torch.as_tensor(candidates, device=device).long()
    n_cells, k = check_pairs(candidates, counts, z_candidates.shape[0])
    if counts.n_genes != decoder.logits.out_features:
        raise ValueError(f"counts has {counts.n_genes} genes, the decoder {decoder.logits.out_features}.")
    if dense not in ("auto", "grid", "exact"):
        raise ValueError(f"dense must be 'auto', 'grid' or 'exact', not {dense!r}.")
    if n_grid < 2:
        raise ValueError(f"n_grid must be at least 2, got {n_grid}.")
    backend = _resolve_backend(backend, device)
    batch_index = torch.as_tensor(batch_index, device=device).reshape(-1).long()
    log_library = torch.as_tensor(log_library, device=device, dtype=torch.float32).reshape(-1)
    counts = counts.to(device)
    z_candidates = z_candidates.float()
    chunk_size = chunk_size or max(1, max_elements // counts.n_genes)
    out = torch.zeros(n_cells * k, dtype=torch.float64, device=device)
    if n_cells == 0 or k == 0:
        return out.reshape(n_cells, k)

    jobs = plan_jobs(candidates, batch_index, log_library, n_grid, chunk_size, dense)
    numba_counts = _kernel_numba.NumbaCounts(counts) if backend == "numba" else None
    with predicting(decoder):
        for job in track(jobs, description="Similarity", disable=not progress_bar or len(jobs) < 2):
            chunk = decode_chunk(decoder, z_candidates[job.codes], job.batch)
            cells = torch.div(job.pairs, k, rounding_mode="floor")
            t = log_library[cells]
            if numba_counts is not None:
                out[job.pairs] = _kernel_numba.chunk_log_likelihood(chunk, job.rows, cells, t, numba_counts, job.grid)
                continue
            if job.grid is not None:
                values, slopes = dense_grid(chunk, job.grid)
                dense_values = hermite_interpolate(job.grid, values, slopes, job.rows, t)
            else:
                dense_values = dense_pairs(chunk, job.rows, t, max_elements)
            out[job.pairs] = dense_values + sparse_part(chunk, job.rows, cells, t, counts, max_elements)
    return out.reshape(n_cells, k)


@torch.inference_mode()
def profile_log_likelihood(
    log_profiles: Callable[[torch.Tensor], torch.Tensor],
    candidates: torch.Tensor,
    counts: CountsCSR,
    n_codes: int,
    *,
    backend: Backend = "auto",
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Multinomial log-likelihood ``sum_g x_ig log p_jg`` of every cell's counts under candidate profiles.

    The multinomial coefficient is left out (it depends on ``x_i`` only). Each candidate's log profile is
    computed once, by ``log_profiles``, in chunks.

    Parameters
    ----------
    log_profiles
        Maps a 1-D tensor of candidate indices to their log profiles, ``(m, n_genes)`` (e.g. a decoder's
        log softmax over a gene subset).
    candidates
        Candidate indices of every cell, ``(n_cells, k)``, in ``[0, n_codes)``.
    counts
        Counts of the cells on the same genes, ``(n_cells, n_genes)``.
    n_codes
        Number of candidates ``log_profiles`` accepts.
    backend, max_elements, chunk_size
        As in :func:`candidate_log_likelihood`.

    Returns
    -------
    torch.Tensor
        ``(n_cells, k)`` float64.

    Examples
    --------
    >>> profiles = torch.log_softmax(torch.randn(4, 3), dim=-1)
    >>> counts = CountsCSR.from_scipy(torch.tensor([[1.0, 0, 2], [0, 3, 0]]).numpy())
    >>> ll = profile_log_likelihood(lambda idx: profiles[idx], torch.tensor([[0, 1], [2, 3]]), counts, 4)
    >>> torch.allclose(ll[0, 0], (profiles[0] * torch.tensor([1.0, 0, 2])).sum().double())
    True
    """
    device = counts.data.device
    candidates = torch.as_tensor(candidates, device=device).long()
    n_cells, k = check_pairs(candidates, counts, n_codes)
    backend = _resolve_backend(backend, device)
    numba_counts = _kernel_numba.NumbaCounts(counts) if backend == "numba" else None
    out = torch.zeros(n_cells * k, dtype=torch.float64, device=device)
    if n_cells == 0 or k == 0:
        return out.reshape(n_cells, k)
    chunk_size = chunk_size or max(1, max_elements // max(counts.n_genes, 1))
    pairs = torch.arange(n_cells * k, device=device)
    for codes, chunk_pairs, rows in group_by_code(pairs, candidates.reshape(-1), chunk_size):
        table = log_profiles(codes)
        if table.shape != (codes.shape[0], counts.n_genes):
            raise ValueError(
                f"log_profiles returned shape {tuple(table.shape)}, expected ({codes.shape[0]}, {counts.n_genes})."
            )
        cells = torch.div(chunk_pairs, k, rounding_mode="floor")
        if numba_counts is not None:
            out[chunk_pairs] = _kernel_numba.sparse_dot(table, rows, cells, numba_counts)
        else:
            out[chunk_pairs] = sparse_dot(table.float(), rows, cells, counts, max_elements)
    return out.reshape(n_cells, k)


@torch.inference_mode()
def reference_log_likelihood(
    decoder: ExpressionDecoder,
    z: torch.Tensor,
    x: torch.Tensor,
    batch_index: torch.Tensor,
    log_library: torch.Tensor,
) -> torch.Tensor:
    """The same quantity as :func:`candidate_log_likelihood` for one code per cell, computed densely.

    Decodes ``z[i]`` under ``batch_index[i]`` and library ``exp(log_library[i])`` through the decoder's
    ``forward`` and sums :func:`~speciesvi.module._likelihood.count_log_prob_sum` without the ``lgamma``
    terms. Meant for tests and small inputs (``x`` is dense).

    Examples
    --------
    >>> decoder = ExpressionDecoder(n_latent=2, n_output=5, n_batch=1).eval()
    >>> reference_log_likelihood(decoder, torch.randn(3, 2), torch.ones(3, 5), torch.zeros(3), torch.ones(3)).shape
    torch.Size([3])
    """
    with predicting(decoder):
        batch = torch.as_tensor(batch_index).reshape(-1, 1).long()
        log_l = torch.as_tensor(log_library, dtype=torch.float32).reshape(-1, 1)
        px = decoder(z.float(), batch, log_l)
        return count_log_prob_sum(px, x.float(), count_terms=False)
