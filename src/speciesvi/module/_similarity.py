"""Decoder-likelihood similarity of target cells to candidate cells (scSpecies step 5), as a torch kernel.

For a target cell ``i`` (counts ``x_i``, batch ``b_i``, log library ``t_i``) and a candidate latent code
``z_j``, the kernel evaluates ``log p(x_i | decoder(z_j, b_i), exp(t_i))`` without the ``lgamma`` terms,
which depend on the counts only and cancel in any difference between candidates.

The decoder output depends on the pair only through ``(j, b_i)``, so every needed ``(j, b)`` is decoded
once, in chunks of candidates. The log-likelihood then splits into

* a **dense** part over all genes that depends on the cell only through its library size: for a ZINB,
  ``D(j, b, t) = sum_g softplus(a_g - pi_g) - softplus(-pi_g)`` with
  ``a_g = theta_g (log theta_g - log(theta_g + exp(t) rho_g))`` (for an NB, ``sum_g a_g``). It is a
  smooth function of ``t``: when many cells share a candidate it is evaluated, with its exact derivative,
  on a grid of log-library values covering the batch and interpolated per cell (cubic Hermite);
  otherwise it is evaluated exactly per pair;
* a **sparse** correction over the cell's non-zero genes only, gathered from the chunk's decoded matrix:
  ``x_g (log mu_g - log(theta_g + mu_g))`` (+ ``a_g - pi_g - softplus(a_g - pi_g)`` for a ZINB).

Nothing here knows about AnnData; counts come as a :class:`CountsCSR`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse
from scvi.utils import track

from ._components import ExpressionDecoder
from ._likelihood import EPS, count_log_prob_sum

logger = logging.getLogger(__name__)

#: Upper clamp of the decoder's log inverse dispersion (as in :meth:`ExpressionDecoder.forward`).
LOG_THETA_MAX = 12.0
#: Default bound on the number of float32 elements of one intermediate array (``2**22`` = 16 MiB).
DEFAULT_MAX_ELEMENTS = 2**22
#: Default number of log-library grid points per target batch.
DEFAULT_N_GRID = 16

DenseMethod = Literal["auto", "grid", "exact"]


@dataclass
class CountsCSR:
    """Counts of target cells in compressed sparse row form, as torch tensors.

    Parameters
    ----------
    indptr
        Row pointers, ``(n_cells + 1,)`` int64.
    indices
        Gene index of every stored count, int64.
    data
        The counts, float32.
    n_genes
        Number of genes (columns).

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import sparse
    >>> counts = CountsCSR.from_scipy(sparse.csr_matrix(np.array([[0, 2], [1, 0]])))
    >>> counts.row_lengths().tolist()
    [1, 1]
    """

    indptr: torch.Tensor
    indices: torch.Tensor
    data: torch.Tensor
    n_genes: int

    @classmethod
    def from_scipy(cls, matrix: sparse.spmatrix | sparse.sparray | np.ndarray) -> CountsCSR:
        """Wrap a SciPy sparse matrix (or a dense array) without densifying it; explicit zeros are dropped."""
        csr = sparse.csr_matrix(matrix, dtype=np.float32, copy=True)
        csr.eliminate_zeros()
        csr.sort_indices()
        return cls(
            indptr=torch.from_numpy(csr.indptr.astype(np.int64)),
            indices=torch.from_numpy(csr.indices.astype(np.int64)),
            data=torch.from_numpy(csr.data),
            n_genes=int(csr.shape[1]),
        )

    @property
    def n_cells(self) -> int:
        """Number of cells (rows)."""
        return int(self.indptr.shape[0] - 1)

    def row_lengths(self) -> torch.Tensor:
        """Number of non-zero counts of every cell."""
        return self.indptr[1:] - self.indptr[:-1]

    def to(self, device: torch.device | str) -> CountsCSR:
        """Move the tensors to ``device``."""
        return CountsCSR(self.indptr.to(device), self.indices.to(device), self.data.to(device), self.n_genes)


@dataclass
class DecodedChunk:
    """Decoder output for a chunk of candidates under one batch.

    ``log_rho`` is ``(m, genes)``; ``log_theta`` is ``(m, genes)`` for ``dispersion="gene-cell"`` and
    ``(1, genes)`` otherwise; ``zi_logits`` is ``(m, genes)`` for a ZINB and ``None`` for an NB.
    """

    log_rho: torch.Tensor
    log_theta: torch.Tensor
    zi_logits: torch.Tensor | None

    @property
    def n_genes(self) -> int:
        """Number of genes."""
        return int(self.log_rho.shape[1])


def decode_chunk(decoder: ExpressionDecoder, z: torch.Tensor, batch: int) -> DecodedChunk:
    """Decode latent codes ``z`` (``(m, n_latent)``) under target batch ``batch``.

    Parameters
    ----------
    decoder
        The target decoder (put in eval mode by the caller).
    z
        Latent codes.
    batch
        Batch index all codes are decoded under.

    Returns
    -------
    DecodedChunk
        Log expression (log softmax over all genes), log inverse dispersion (clamped as the decoder does)
        and zero-inflation logits.
    """
    batch_index = torch.full((z.shape[0], 1), int(batch), dtype=torch.long, device=z.device)
    hidden = decoder.hidden(z, batch_index)
    log_rho = torch.log_softmax(decoder.logits(hidden), dim=-1)
    log_theta = decoder.log_theta_for(hidden, batch_index).clamp(max=LOG_THETA_MAX)
    if log_theta.dim() == 1:
        log_theta = log_theta.unsqueeze(0)
    elif decoder.dispersion == "gene-batch":
        log_theta = log_theta[:1]  # the same row for every code
    zi_logits = decoder.zi_logits(hidden) if decoder.zi_logits is not None else None
    return DecodedChunk(log_rho=log_rho, log_theta=log_theta, zi_logits=zi_logits)


def _dense_terms(
    log_rho: torch.Tensor,
    log_theta: torch.Tensor,
    zi_logits: torch.Tensor | None,
    log_library: torch.Tensor | float,
    derivative: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Row sums over all genes of the zero-count log-probability, and optionally their ``d/d log l``.

    All tensor arguments broadcast against ``log_rho`` ``(rows, genes)``; ``log_library`` is a float or
    ``(rows, 1)``.
    """
    theta = log_theta.exp()
    mu = (log_rho + log_library).exp()
    theta_mu = theta + mu + EPS
    a = theta * (torch.log(theta + EPS) - torch.log(theta_mu))
    if zi_logits is None:
        value = a.sum(-1)
        weight = None
    else:
        shifted = a - zi_logits
        value = (F.softplus(shifted) - F.softplus(-zi_logits)).sum(-1)
        weight = torch.sigmoid(shifted) if derivative else None
    if not derivative:
        return value, None
    da = -theta * mu / theta_mu  # d a / d log l
    slope = (da if weight is None else weight * da).sum(-1)
    return value, slope


def dense_on_grid(chunk: DecodedChunk, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense part and its derivative for every decoded code at every grid value of the log library.

    Returns two ``(m, len(grid))`` tensors.
    """
    values, slopes = [], []
    for t in grid.tolist():
        value, slope = _dense_terms(chunk.log_rho, chunk.log_theta, chunk.zi_logits, t, derivative=True)
        values.append(value)
        slopes.append(slope)
    return torch.stack(values, dim=1), torch.stack(slopes, dim=1)


def hermite_interpolate(
    grid: torch.Tensor, values: torch.Tensor, slopes: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """Cubic Hermite interpolation on a uniform grid.

    Parameters
    ----------
    grid
        Uniform grid, ``(n_grid,)`` with ``n_grid >= 2``.
    values, slopes
        Function values and derivatives at the grid, one row per query, ``(n, n_grid)``.
    t
        Query points, ``(n,)``; clamped to the grid.

    Returns
    -------
    torch.Tensor
        Interpolated values, ``(n,)``.
    """
    step = (grid[-1] - grid[0]) / (grid.shape[0] - 1)
    position = ((t - grid[0]) / step).clamp(0, grid.shape[0] - 1)
    left = position.floor().long().clamp(max=grid.shape[0] - 2)
    u = position - left
    rows = torch.arange(t.shape[0], device=t.device)
    v0, v1 = values[rows, left], values[rows, left + 1]
    d0, d1 = slopes[rows, left] * step, slopes[rows, left + 1] * step
    u2, u3 = u * u, u * u * u
    return (2 * u3 - 3 * u2 + 1) * v0 + (u3 - 2 * u2 + u) * d0 + (-2 * u3 + 3 * u2) * v1 + (u3 - u2) * d1


def _sparse_sums(
    chunk: DecodedChunk,
    rows: torch.Tensor,
    cells: torch.Tensor,
    log_library: torch.Tensor,
    counts: CountsCSR,
    max_elements: int,
) -> torch.Tensor:
    """Per-pair sums over the cell's non-zero genes of the positive-count correction.

    ``rows`` are rows of the decoded chunk, ``cells`` rows of ``counts``, ``log_library`` per pair.
    """
    n_pairs = rows.shape[0]
    out = torch.zeros(n_pairs, dtype=chunk.log_rho.dtype, device=rows.device)
    lengths = counts.row_lengths()[cells]
    starts = counts.indptr[cells]
    n_genes = chunk.n_genes
    flat_rho = chunk.log_rho.reshape(-1)
    flat_theta = chunk.log_theta.reshape(-1)
    per_row_theta = chunk.log_theta.shape[0] > 1
    flat_pi = chunk.zi_logits.reshape(-1) if chunk.zi_logits is not None else None
    ends = torch.cumsum(lengths, 0)
    lo = 0
    while lo < n_pairs:
        # take pairs while their non-zero counts fit into max_elements (at least one pair)
        base = ends[lo - 1] if lo > 0 else torch.zeros((), dtype=ends.dtype)
        hi = int(torch.searchsorted(ends, base + max_elements, right=True))
        hi = min(max(hi, lo + 1), n_pairs)
        sub_len = lengths[lo:hi]
        total = int(sub_len.sum())
        if total > 0:
            pair_of = torch.repeat_interleave(torch.arange(hi - lo, device=rows.device), sub_len)
            offsets = torch.cumsum(sub_len, 0) - sub_len
            position = starts[lo:hi][pair_of] + torch.arange(total, device=rows.device) - offsets[pair_of]
            genes = counts.indices[position]
            x = counts.data[position]
            row_of = rows[lo:hi][pair_of]
            flat = row_of * n_genes + genes
            log_mu = flat_rho[flat] + log_library[lo:hi][pair_of]
            log_theta = flat_theta[flat] if per_row_theta else flat_theta[genes]
            theta = log_theta.exp()
            mu = log_mu.exp()
            log_theta_mu = torch.log(theta + mu + EPS)
            terms = x * (torch.log(mu + EPS) - log_theta_mu)
            if flat_pi is not None:
                a = theta * (torch.log(theta + EPS) - log_theta_mu)
                terms = terms - F.softplus(flat_pi[flat] - a)  # a - pi - softplus(a - pi)
            out[lo:hi] = torch.zeros(hi - lo, dtype=terms.dtype, device=rows.device).index_add_(0, pair_of, terms)
        lo = hi
    return out


def _dense_exact(
    chunk: DecodedChunk, rows: torch.Tensor, log_library: torch.Tensor, max_elements: int
) -> torch.Tensor:
    """Dense part evaluated exactly for every pair (rows of the decoded chunk, per-pair log library)."""
    n_genes = chunk.n_genes
    step = max(1, max_elements // n_genes)
    parts = []
    for lo in range(0, rows.shape[0], step):
        sub = rows[lo : lo + step]
        log_theta = chunk.log_theta[sub] if chunk.log_theta.shape[0] > 1 else chunk.log_theta
        pi = chunk.zi_logits[sub] if chunk.zi_logits is not None else None
        value, _ = _dense_terms(
            chunk.log_rho[sub], log_theta, pi, log_library[lo : lo + step].unsqueeze(1), derivative=False
        )
        parts.append(value)
    return torch.cat(parts) if parts else torch.zeros(0, device=rows.device)


@dataclass
class _Job:
    batch: int
    codes: torch.Tensor  # candidate rows to decode
    pairs: torch.Tensor  # flat pair ids (cell * k + slot)
    rows: torch.Tensor  # row of each pair in the decoded chunk
    grid: torch.Tensor | None


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
    max_elements
        Bound on the size of intermediate arrays (float32 elements); memory stays at a small multiple.
    chunk_size
        Candidates decoded at once; defaults to ``max_elements // n_genes``.
    progress_bar
        Show a progress bar over the chunks.

    Returns
    -------
    torch.Tensor
        ``(n_cells, k)`` float32 on the device of ``z_candidates``.

    Examples
    --------
    >>> import torch
    >>> from scipy import sparse
    >>> from speciesvi.module import ExpressionDecoder
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
    if candidates.dim() != 2:
        raise ValueError(f"candidates must be (n_cells, k), got shape {tuple(candidates.shape)}.")
    n_cells, k = candidates.shape
    if counts.n_cells != n_cells:
        raise ValueError(f"counts has {counts.n_cells} cells, candidates {n_cells}.")
    if counts.n_genes != decoder.logits.out_features:
        raise ValueError(f"counts has {counts.n_genes} genes, the decoder {decoder.logits.out_features}.")
    if n_cells and (candidates.min() < 0 or candidates.max() >= z_candidates.shape[0]):
        raise ValueError(f"candidate indices must lie in [0, {z_candidates.shape[0]}).")
    batch_index = torch.as_tensor(batch_index, device=device).reshape(-1).long()
    log_library = torch.as_tensor(log_library, device=device, dtype=torch.float32).reshape(-1)
    counts = counts.to(device)
    z_candidates = z_candidates.float()
    n_genes = counts.n_genes
    chunk_size = chunk_size or max(1, max_elements // n_genes)

    if dense not in ("auto", "grid", "exact"):
        raise ValueError(f"dense must be 'auto', 'grid' or 'exact', not {dense!r}.")
    if n_grid < 2:
        raise ValueError(f"n_grid must be at least 2, got {n_grid}.")
    jobs = _plan_jobs(candidates, batch_index, log_library, n_grid, chunk_size, dense)
    out = torch.empty(n_cells * k, dtype=torch.float32, device=device)
    pair_cell = torch.div(torch.arange(n_cells * k, device=device), k, rounding_mode="floor") if k else None
    was_training = decoder.training
    decoder.eval()
    try:
        for job in track(jobs, description="Similarity", disable=not progress_bar or len(jobs) < 2):
            chunk = decode_chunk(decoder, z_candidates[job.codes], job.batch)
            cells = pair_cell[job.pairs]
            t = log_library[cells]
            if job.grid is not None:
                values, slopes = dense_on_grid(chunk, job.grid)
                dense = hermite_interpolate(job.grid, values[job.rows], slopes[job.rows], t)
            else:
                dense = _dense_exact(chunk, job.rows, t, max_elements)
            out[job.pairs] = dense + _sparse_sums(chunk, job.rows, cells, t, counts, max_elements)
    finally:
        decoder.train(was_training)
    return out.reshape(n_cells, k)


def _plan_jobs(
    candidates: torch.Tensor,
    batch_index: torch.Tensor,
    log_library: torch.Tensor,
    n_grid: int,
    chunk_size: int,
    dense: DenseMethod,
) -> list[_Job]:
    """Group pairs by (batch, candidate) and cut the distinct candidates of each batch into chunks."""
    n_cells, k = candidates.shape
    device = candidates.device
    slots = torch.arange(k, device=device)
    jobs = []
    for batch in torch.unique(batch_index).tolist():
        cells = (batch_index == batch).nonzero().squeeze(1)
        pairs = (cells.unsqueeze(1) * k + slots).reshape(-1)
        codes = candidates.reshape(-1)[pairs]
        order = torch.argsort(codes, stable=True)
        pairs, codes = pairs[order], codes[order]
        distinct, per_code = torch.unique_consecutive(codes, return_counts=True)
        ends = torch.cumsum(per_code, 0)
        t = log_library[cells]
        low, high = float(t.min()), float(t.max())
        grid = None
        if dense != "exact" and high - low > 1e-6:
            grid = torch.linspace(low, high, n_grid, device=device)
        for lo in range(0, distinct.shape[0], chunk_size):
            hi = min(lo + chunk_size, distinct.shape[0])
            first = int(ends[lo - 1]) if lo > 0 else 0
            last = int(ends[hi - 1])
            rows = torch.repeat_interleave(torch.arange(hi - lo, device=device), per_code[lo:hi])
            # the grid costs about 1.5 * n_grid dense evaluations per code, the exact path one per pair
            use_grid = grid is not None and (dense == "grid" or (last - first) > 1.5 * n_grid * (hi - lo))
            jobs.append(_Job(batch, distinct[lo:hi], pairs[first:last], rows, grid if use_grid else None))
    return jobs


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
    >>> import torch
    >>> from speciesvi.module import ExpressionDecoder
    >>> decoder = ExpressionDecoder(n_latent=2, n_output=5, n_batch=1).eval()
    >>> reference_log_likelihood(decoder, torch.randn(3, 2), torch.ones(3, 5), torch.zeros(3), torch.ones(3)).shape
    torch.Size([3])
    """
    was_training = decoder.training
    decoder.eval()
    try:
        batch = torch.as_tensor(batch_index).reshape(-1, 1).long()
        log_l = torch.as_tensor(log_library, dtype=torch.float32).reshape(-1, 1)
        px = decoder(z.float(), batch, log_l)
        return count_log_prob_sum(px, x.float(), count_terms=False)
    finally:
        decoder.train(was_training)


def grid_size_for(max_abs_error: float, log_library_range: float, total_count: float) -> int:
    """A rough number of grid points for a target interpolation error (cubic Hermite, error ~ h^4).

    The dense part's fourth derivative in ``log l`` is of the order of the expected total count, so
    the error bound is about ``h**4 / 384 * total_count`` with ``h = range / (n_grid - 1)``.

    Examples
    --------
    >>> grid_size_for(0.01, 3.0, 20000)
    10
    """
    if log_library_range <= 0:
        return 2
    h = (384 * max_abs_error / max(total_count, 1.0)) ** 0.25
    return max(2, math.ceil(log_library_range / h) + 1)
