"""Decoder-likelihood similarity of target cells to candidate latent codes (scSpecies step 5).

For a target cell ``i`` (counts ``x_i``, batch ``b_i``, log library ``t_i``) and a candidate latent code
``z_j``, :func:`candidate_log_likelihood` evaluates ``log p(x_i | decoder(z_j, b_i), exp(t_i))`` without
the ``lgamma`` terms, which depend on the counts only and cancel in any difference between candidates.

The decoder output depends on the pair only through ``(j, b_i)``, so every needed ``(j, b)`` is decoded
once, in chunks of candidates. With ``mu = l rho``, ``c = log theta - log rho`` (so ``log(mu / theta) =
t - c``) and ``a = theta (log theta - log(theta + mu)) = -theta softplus(t - c)``, the log-likelihood splits
into

* a **dense** part over all genes that depends on the cell only through its log library ``t``:
  ``D(j, b, t) = sum_g softplus(a_g - pi_g) - softplus(-pi_g)`` for a ZINB with zero-inflation logits
  ``pi`` (``sum_g a_g`` for an NB). It is smooth in ``t``: when many cells share a candidate it is
  evaluated with its exact derivative on a grid of log-library values spanning the batch and interpolated
  per cell (cubic Hermite); otherwise it is evaluated for every pair;
* a **sparse** correction over the cell's non-zero genes only, gathered from the chunk's decoded matrix:
  ``-x_g softplus(c_g - t)`` (that is ``x_g (log mu_g - log(theta_g + mu_g))``), plus
  ``-softplus(pi_g - a_g)`` for a ZINB.

Two backends compute the same quantities: ``"numba"`` (CPU; fused loops with a tabulated softplus,
absolute error below 1e-6 per term) and ``"torch"`` (any device, exact ``torch`` functions).
:func:`profile_log_likelihood` evaluates multinomial log-likelihoods ``sum_g x_g log p_jg`` of candidate
profiles the same way. Nothing here knows about AnnData; counts come as a :class:`CountsCSR`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse
from scvi.utils import track

from ._components import ExpressionDecoder
from ._likelihood import EPS, count_log_prob_sum
from ._modes import predicting

try:  # numba comes with pynndescent and scanpy; the torch backend works without it
    import numba
except ImportError:  # pragma: no cover - numba is a dependency of pynndescent
    numba = None

logger = logging.getLogger(__name__)

#: Default bound on the number of float32 elements of one intermediate array (``2**22`` = 16 MiB).
DEFAULT_MAX_ELEMENTS = 2**22
#: Default number of log-library grid points per target batch (cubic Hermite; about 0.01 nats on real data).
DEFAULT_N_GRID = 8

DenseMethod = Literal["auto", "grid", "exact"]
Backend = Literal["auto", "numba", "torch"]


# -- inputs -----------------------------------------------------------------------------------------
@dataclass
class CountsCSR:
    """Counts of cells in compressed sparse row form, as torch tensors.

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

    def row_sums(self) -> torch.Tensor:
        """Total count of every cell."""
        rows = torch.repeat_interleave(torch.arange(self.n_cells, device=self.data.device), self.row_lengths())
        return torch.zeros(self.n_cells, dtype=self.data.dtype, device=self.data.device).index_add_(0, rows, self.data)

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

    Examples
    --------
    >>> decoder = ExpressionDecoder(n_latent=2, n_output=5, n_batch=1).eval()
    >>> decode_chunk(decoder, torch.randn(3, 2), batch=0).log_rho.shape
    torch.Size([3, 5])
    """
    batch_index = torch.full((z.shape[0], 1), int(batch), dtype=torch.long, device=z.device)
    hidden = decoder.hidden(z, batch_index)
    log_rho = torch.log_softmax(decoder.logits(hidden), dim=-1)
    log_theta = decoder.log_theta_for(hidden, batch_index)
    if log_theta.dim() == 1:
        log_theta = log_theta.unsqueeze(0)
    elif decoder.dispersion == "gene-batch":
        log_theta = log_theta[:1]  # the same row for every code
    zi_logits = decoder.zi_logits(hidden) if decoder.zi_logits is not None else None
    return DecodedChunk(log_rho=log_rho, log_theta=log_theta, zi_logits=zi_logits)


# -- torch backend ----------------------------------------------------------------------------------
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


def _torch_dense_grid(chunk: DecodedChunk, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    values, slopes = [], []
    for t in grid.tolist():
        value, slope = _dense_terms(chunk.log_rho, chunk.log_theta, chunk.zi_logits, t, derivative=True)
        values.append(value)
        slopes.append(slope)
    return torch.stack(values, dim=1).double(), torch.stack(slopes, dim=1).double()


def _torch_dense_pairs(chunk: DecodedChunk, rows: torch.Tensor, t: torch.Tensor, max_elements: int) -> torch.Tensor:
    step = max(1, max_elements // chunk.n_genes)
    parts = [torch.zeros(0, dtype=torch.float64, device=rows.device)]
    for lo in range(0, rows.shape[0], step):
        sub = rows[lo : lo + step]
        log_theta = chunk.log_theta[sub] if chunk.log_theta.shape[0] > 1 else chunk.log_theta
        pi = chunk.zi_logits[sub] if chunk.zi_logits is not None else None
        value, _ = _dense_terms(chunk.log_rho[sub], log_theta, pi, t[lo : lo + step].unsqueeze(1), derivative=False)
        parts.append(value.double())
    return torch.cat(parts)


def _ragged_positions(starts: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For pairs with ``lengths`` stored counts starting at ``starts``: the pair of every element and its position."""
    total = int(lengths.sum())
    pair_of = torch.repeat_interleave(torch.arange(lengths.shape[0], device=lengths.device), lengths)
    offsets = torch.cumsum(lengths, 0) - lengths
    position = starts[pair_of] + torch.arange(total, device=lengths.device) - offsets[pair_of]
    return pair_of, position


def _pair_batches(lengths: torch.Tensor, max_elements: int) -> list[tuple[int, int]]:
    """Cut consecutive pairs into ranges whose stored counts fit into ``max_elements`` (at least one pair)."""
    ends = torch.cumsum(lengths, 0)
    ranges, lo, n = [], 0, lengths.shape[0]
    while lo < n:
        base = int(ends[lo - 1]) if lo > 0 else 0
        hi = int(torch.searchsorted(ends, torch.tensor(base + max_elements, device=ends.device), right=True))
        hi = min(max(hi, lo + 1), n)
        ranges.append((lo, hi))
        lo = hi
    return ranges


def _torch_sparse(
    chunk: DecodedChunk,
    rows: torch.Tensor,
    cells: torch.Tensor,
    t: torch.Tensor,
    counts: CountsCSR,
    max_elements: int,
) -> torch.Tensor:
    out = torch.zeros(rows.shape[0], dtype=torch.float64, device=rows.device)
    lengths = counts.row_lengths()[cells]
    starts = counts.indptr[cells]
    n_genes = chunk.n_genes
    flat_rho = chunk.log_rho.reshape(-1)
    flat_theta = chunk.log_theta.reshape(-1)
    per_row_theta = chunk.log_theta.shape[0] > 1
    flat_pi = chunk.zi_logits.reshape(-1) if chunk.zi_logits is not None else None
    for lo, hi in _pair_batches(lengths, max_elements):
        pair_of, position = _ragged_positions(starts[lo:hi], lengths[lo:hi])
        genes = counts.indices[position]
        x = counts.data[position]
        flat = rows[lo:hi][pair_of] * n_genes + genes
        theta = (flat_theta[flat] if per_row_theta else flat_theta[genes]).exp()
        mu = (flat_rho[flat] + t[lo:hi][pair_of]).exp()
        log_theta_mu = torch.log(theta + mu + EPS)
        terms = x * (torch.log(mu + EPS) - log_theta_mu)
        if flat_pi is not None:
            a = theta * (torch.log(theta + EPS) - log_theta_mu)
            terms = terms - F.softplus(flat_pi[flat] - a)  # a - pi - softplus(a - pi)
        sums = torch.zeros(hi - lo, dtype=terms.dtype, device=rows.device).index_add_(0, pair_of, terms)
        out[lo:hi] = sums.double()
    return out


def _torch_sparse_dot(
    table: torch.Tensor, rows: torch.Tensor, cells: torch.Tensor, counts: CountsCSR, max_elements: int
) -> torch.Tensor:
    out = torch.zeros(rows.shape[0], dtype=torch.float64, device=rows.device)
    lengths = counts.row_lengths()[cells]
    starts = counts.indptr[cells]
    flat_table = table.reshape(-1)
    for lo, hi in _pair_batches(lengths, max_elements):
        pair_of, position = _ragged_positions(starts[lo:hi], lengths[lo:hi])
        values = counts.data[position] * flat_table[rows[lo:hi][pair_of] * table.shape[1] + counts.indices[position]]
        sums = torch.zeros(hi - lo, dtype=values.dtype, device=rows.device).index_add_(0, pair_of, values)
        out[lo:hi] = sums.double()
    return out


# -- numba backend ----------------------------------------------------------------------------------
_SP_STEPS = 16  # table knots per unit
_SP_VMAX = 20.0  # log1p(exp(-v)) < 2.1e-9 beyond
_SP_N = int(_SP_VMAX * _SP_STEPS)


def _softplus_table() -> np.ndarray:
    """Cubic (Hermite) coefficients of ``log1p(exp(-v))`` on ``[0, 20]`` in steps of 1/16, one row per interval.

    The last row is zero (the function is below 2.1e-9 there). Interpolation error is below 1e-8.
    """
    v = np.arange(_SP_N + 1, dtype=np.float64) / _SP_STEPS
    value = np.log1p(np.exp(-v))
    slope = -1.0 / (1.0 + np.exp(v))
    h = 1.0 / _SP_STEPS
    c0, c1 = value[:-1], slope[:-1] * h
    c2 = 3 * (value[1:] - value[:-1]) - (2 * slope[:-1] + slope[1:]) * h
    c3 = 2 * (value[:-1] - value[1:]) + (slope[:-1] + slope[1:]) * h
    table = np.stack([c0, c1, c2, c3], axis=1)
    return np.vstack([table, np.zeros((1, 4))]).astype(np.float32)


_SP_TABLE = _softplus_table()

if numba is not None:
    _njit = numba.njit(fastmath=True, cache=True, parallel=True)
    _inline = numba.njit(inline="always", fastmath=True, cache=True)
    _F0 = np.float32(0.0)
    _F1 = np.float32(1.0)

    @_inline
    def _softplus_nb(u, table):  # pragma: no cover - compiled
        a = min(abs(u) * np.float32(_SP_STEPS), np.float32(_SP_N))
        i = int(a)
        f = a - np.float32(i)
        return max(u, _F0) + (table[i, 0] + f * (table[i, 1] + f * (table[i, 2] + f * table[i, 3])))

    @_inline
    def _softplus_sigmoid_nb(u, table):  # pragma: no cover - compiled
        a = min(abs(u) * np.float32(_SP_STEPS), np.float32(_SP_N))
        i = int(a)
        f = a - np.float32(i)
        value = max(u, _F0) + (table[i, 0] + f * (table[i, 1] + f * (table[i, 2] + f * table[i, 3])))
        # d/dv log1p(exp(-v)) = -sigmoid(-v); sigmoid(u) = 1 + that for u >= 0, minus it for u < 0
        grad = (table[i, 1] + f * (np.float32(2.0) * table[i, 2] + f * np.float32(3.0) * table[i, 3])) * np.float32(
            _SP_STEPS
        )
        return value, (_F1 + grad) if u >= _F0 else -grad

    @_njit
    def _nb_dense_grid(c_tab, theta_tab, zi, grid, values, slopes, table):  # pragma: no cover - compiled
        row_theta = 1 if theta_tab.shape[0] > 1 else 0
        zinb = zi.shape[0] > 0
        n_genes = c_tab.shape[1]
        for r in numba.prange(c_tab.shape[0]):
            rt = r * row_theta
            base = 0.0
            if zinb:
                for g in range(n_genes):
                    base += _softplus_nb(-zi[r, g], table)
            for k in range(grid.shape[0]):  # genes innermost: contiguous rows, vectorised by LLVM
                t = grid[k]
                value = 0.0
                slope = 0.0
                for g in range(n_genes):
                    theta = theta_tab[rt, g]
                    sp, sig = _softplus_sigmoid_nb(t - c_tab[r, g], table)  # log(1 + mu/theta), mu/(theta + mu)
                    a = -theta * sp
                    if zinb:
                        v, s = _softplus_sigmoid_nb(a - zi[r, g], table)
                        value += v
                        slope -= s * theta * sig
                    else:
                        value += a
                        slope -= theta * sig
                values[r, k] = value - base
                slopes[r, k] = slope

    @_njit
    def _nb_dense_pairs(c_tab, theta_tab, zi, rows, t, out, table):  # pragma: no cover - compiled
        row_theta = 1 if theta_tab.shape[0] > 1 else 0
        zinb = zi.shape[0] > 0
        for p in numba.prange(rows.shape[0]):
            r = rows[p]
            rt = r * row_theta
            tt = t[p]
            acc = 0.0
            for g in range(c_tab.shape[1]):
                a = -theta_tab[rt, g] * _softplus_nb(tt - c_tab[r, g], table)
                if zinb:
                    pi = zi[r, g]
                    acc += _softplus_nb(a - pi, table) - _softplus_nb(-pi, table)
                else:
                    acc += a
            out[p] = acc

    @_njit
    def _nb_sparse(c_tab, theta_tab, zi, rows, cells, t, indptr, indices, data, out, table):  # pragma: no cover
        row_theta = 1 if theta_tab.shape[0] > 1 else 0
        zinb = zi.shape[0] > 0
        for p in numba.prange(rows.shape[0]):
            r = rows[p]
            rt = r * row_theta
            cell = cells[p]
            tt = t[p]
            acc = 0.0
            for e in range(indptr[cell], indptr[cell + 1]):
                g = indices[e]
                u = c_tab[r, g] - tt  # log(theta / mu)
                s1 = _softplus_nb(u, table)  # log(theta + mu) - log(mu)
                term = -data[e] * s1
                if zinb:
                    a = theta_tab[rt, g] * (u - s1)  # theta (log theta - log(theta + mu))
                    term -= _softplus_nb(zi[r, g] - a, table)
                acc += term
            out[p] = acc

    @numba.njit(fastmath=True, cache=True)
    def _nb_hermite(values, slopes, start, step, rows, t, out):  # pragma: no cover - compiled
        last = values.shape[1] - 1
        for p in range(rows.shape[0]):
            position = min(max((t[p] - start) / step, 0.0), float(last))
            left = min(int(position), last - 1)
            u = position - left
            u2 = u * u
            u3 = u2 * u
            r = rows[p]
            out[p] = (
                (2 * u3 - 3 * u2 + 1) * values[r, left]
                + (u3 - 2 * u2 + u) * slopes[r, left] * step
                + (-2 * u3 + 3 * u2) * values[r, left + 1]
                + (u3 - u2) * slopes[r, left + 1] * step
            )

    @_njit
    def _nb_sparse_dot(table, rows, cells, indptr, indices, data, out):  # pragma: no cover - compiled
        for p in numba.prange(rows.shape[0]):
            r = rows[p]
            cell = cells[p]
            acc = 0.0
            for e in range(indptr[cell], indptr[cell + 1]):
                acc += data[e] * table[r, indices[e]]
            out[p] = acc


def _numpy(x: torch.Tensor, dtype: type | None = None) -> np.ndarray:
    array = x.detach().cpu().numpy()
    return np.ascontiguousarray(array if dtype is None else array.astype(dtype, copy=False))


class _NumbaChunk:
    """A decoded chunk as the contiguous float32 tables the numba kernels read."""

    def __init__(self, chunk: DecodedChunk):
        self.c_tab = _numpy(chunk.log_theta - chunk.log_rho, np.float32)  # log theta - log rho
        self.theta_tab = _numpy(chunk.log_theta.exp(), np.float32)
        self.zi = (
            _numpy(chunk.zi_logits, np.float32)
            if chunk.zi_logits is not None
            else np.zeros((0, self.c_tab.shape[1]), dtype=np.float32)
        )


def numba_available() -> bool:
    """Whether the numba backend can be used.

    Examples
    --------
    >>> isinstance(numba_available(), bool)
    True
    """
    return numba is not None


def _resolve_backend(backend: Backend, device: torch.device) -> Literal["numba", "torch"]:
    if backend not in ("auto", "numba", "torch"):
        raise ValueError(f"backend must be 'auto', 'numba' or 'torch', not {backend!r}.")
    if backend == "numba" and not numba_available():
        raise ValueError("backend='numba' needs the numba package; use backend='torch'.")
    if backend == "numba" and device.type != "cpu":
        raise ValueError("backend='numba' runs on the CPU; use backend='torch' for tensors on other devices.")
    if backend == "auto":
        return "numba" if numba_available() and device.type == "cpu" else "torch"
    return backend


# -- interpolation and planning ---------------------------------------------------------------------
def hermite_interpolate(
    grid: torch.Tensor, values: torch.Tensor, slopes: torch.Tensor, rows: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """Cubic Hermite interpolation on a uniform grid.

    Parameters
    ----------
    grid
        Uniform grid, ``(n_grid,)`` with ``n_grid >= 2``.
    values, slopes
        Function values and derivatives at the grid, one row per function, ``(n_functions, n_grid)``.
    rows
        The function to evaluate for each query, ``(n,)``.
    t
        Query points, ``(n,)``; clamped to the grid.

    Returns
    -------
    torch.Tensor
        Interpolated values, ``(n,)``.

    Examples
    --------
    >>> grid = torch.linspace(0, 1, 5)
    >>> hermite_interpolate(grid, (grid**3)[None], (3 * grid**2)[None], torch.tensor([0]), torch.tensor([0.3]))
    tensor([0.0270])
    """
    grid = grid.to(values.dtype)
    t = t.to(values.dtype)
    n_grid = grid.shape[0]
    step = (grid[-1] - grid[0]) / (n_grid - 1)
    position = ((t - grid[0]) / step).clamp(0, n_grid - 1)
    left = position.floor().long().clamp(max=n_grid - 2)
    u = position - left
    flat = rows * n_grid + left
    flat_values, flat_slopes = values.reshape(-1), slopes.reshape(-1)
    v0, v1 = flat_values[flat], flat_values[flat + 1]
    d0, d1 = flat_slopes[flat] * step, flat_slopes[flat + 1] * step
    u2 = u * u
    u3 = u2 * u
    return (2 * u3 - 3 * u2 + 1) * v0 + (u3 - 2 * u2 + u) * d0 + (-2 * u3 + 3 * u2) * v1 + (u3 - u2) * d1


@dataclass
class _Job:
    batch: int
    codes: torch.Tensor  # candidate rows to decode
    pairs: torch.Tensor  # flat pair ids (cell * k + slot)
    rows: torch.Tensor  # row of each pair in the decoded chunk
    grid: torch.Tensor | None


def _group_by_code(pairs: torch.Tensor, codes: torch.Tensor, chunk_size: int) -> list[tuple]:
    """Sort pairs by code and cut the distinct codes into chunks: ``(codes, pairs, rows)`` per chunk."""
    if codes.device.type == "cpu":  # numpy's single-threaded sort does not stall on a busy machine
        order = torch.from_numpy(np.argsort(codes.numpy(), kind="stable"))
    else:
        order = torch.argsort(codes, stable=True)
    pairs, codes = pairs[order], codes[order]
    distinct, per_code = torch.unique_consecutive(codes, return_counts=True)
    ends = torch.cumsum(per_code, 0)
    chunks = []
    for lo in range(0, distinct.shape[0], chunk_size):
        hi = min(lo + chunk_size, distinct.shape[0])
        first = int(ends[lo - 1]) if lo > 0 else 0
        last = int(ends[hi - 1])
        rows = torch.repeat_interleave(torch.arange(hi - lo, device=codes.device), per_code[lo:hi])
        chunks.append((distinct[lo:hi], pairs[first:last], rows))
    return chunks


def _plan_jobs(
    candidates: torch.Tensor,
    batch_index: torch.Tensor,
    log_library: torch.Tensor,
    n_grid: int,
    chunk_size: int,
    dense: DenseMethod,
) -> list[_Job]:
    """Group pairs by (batch, candidate) and cut the distinct candidates of each batch into chunks."""
    k = candidates.shape[1]
    slots = torch.arange(k, device=candidates.device)
    jobs = []
    for batch in torch.unique(batch_index).tolist():
        cells = (batch_index == batch).nonzero().squeeze(1)
        pairs = (cells.unsqueeze(1) * k + slots).reshape(-1)
        t = log_library[cells]
        low, high = float(t.min()), float(t.max())
        grid = None
        if dense != "exact" and high - low > 1e-6:
            grid = torch.linspace(low, high, n_grid, device=candidates.device)
        for codes, chunk_pairs, rows in _group_by_code(pairs, candidates.reshape(-1)[pairs], chunk_size):
            # the grid costs about n_grid dense evaluations per code, the exact path one per pair
            use_grid = grid is not None and (dense == "grid" or chunk_pairs.shape[0] > 1.5 * n_grid * codes.shape[0])
            jobs.append(_Job(batch, codes, chunk_pairs, rows, grid if use_grid else None))
    return jobs


def _check_pairs(candidates: torch.Tensor, counts: CountsCSR, n_codes: int) -> tuple[int, int]:
    if candidates.dim() != 2:
        raise ValueError(f"candidates must be (n_cells, k), got shape {tuple(candidates.shape)}.")
    n_cells, k = candidates.shape
    if counts.n_cells != n_cells:
        raise ValueError(f"counts has {counts.n_cells} cells, candidates {n_cells}.")
    if candidates.numel() and (candidates.min() < 0 or candidates.max() >= n_codes):
        raise ValueError(f"candidate indices must lie in [0, {n_codes}).")
    return n_cells, k


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
        ``"numba"`` (CPU), ``"torch"`` (any device) or ``"auto"`` (numba for CPU tensors when available).
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
    n_cells, k = _check_pairs(candidates, counts, z_candidates.shape[0])
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

    jobs = _plan_jobs(candidates, batch_index, log_library, n_grid, chunk_size, dense)
    if backend == "numba":
        indptr, indices, data = _numpy(counts.indptr), _numpy(counts.indices), _numpy(counts.data, np.float32)
    with predicting(decoder):
        for job in track(jobs, description="Similarity", disable=not progress_bar or len(jobs) < 2):
            chunk = decode_chunk(decoder, z_candidates[job.codes], job.batch)
            cells = torch.div(job.pairs, k, rounding_mode="floor")
            t = log_library[cells]
            if backend == "torch":
                if job.grid is not None:
                    values, slopes = _torch_dense_grid(chunk, job.grid)
                    dense_part = hermite_interpolate(job.grid, values, slopes, job.rows, t)
                else:
                    dense_part = _torch_dense_pairs(chunk, job.rows, t, max_elements)
                sparse_part = _torch_sparse(chunk, job.rows, cells, t, counts, max_elements)
            else:
                tables = _NumbaChunk(chunk)
                rows_np, t_np = _numpy(job.rows), _numpy(t, np.float32)
                if job.grid is not None:
                    grid_np = _numpy(job.grid, np.float32)
                    values = np.empty((tables.c_tab.shape[0], grid_np.shape[0]))
                    slopes = np.empty_like(values)
                    _nb_dense_grid(tables.c_tab, tables.theta_tab, tables.zi, grid_np, values, slopes, _SP_TABLE)
                    dense_np = np.empty(rows_np.shape[0])
                    step = (float(grid_np[-1]) - float(grid_np[0])) / (grid_np.shape[0] - 1)
                    _nb_hermite(values, slopes, float(grid_np[0]), step, rows_np, t_np.astype(np.float64), dense_np)
                    dense_part = torch.from_numpy(dense_np)
                else:
                    dense_np = np.empty(rows_np.shape[0])
                    _nb_dense_pairs(tables.c_tab, tables.theta_tab, tables.zi, rows_np, t_np, dense_np, _SP_TABLE)
                    dense_part = torch.from_numpy(dense_np)
                sparse_np = np.empty(rows_np.shape[0])
                _nb_sparse(
                    tables.c_tab,
                    tables.theta_tab,
                    tables.zi,
                    rows_np,
                    _numpy(cells),
                    t_np,
                    indptr,
                    indices,
                    data,
                    sparse_np,
                    _SP_TABLE,
                )
                sparse_part = torch.from_numpy(sparse_np)
            out[job.pairs] = dense_part + sparse_part
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
    >>> counts = CountsCSR.from_scipy(np.array([[1.0, 0, 2], [0, 3, 0]]))
    >>> ll = profile_log_likelihood(lambda idx: profiles[idx], torch.tensor([[0, 1], [2, 3]]), counts, 4)
    >>> torch.allclose(ll[0, 0], (profiles[0] * torch.tensor([1.0, 0, 2])).sum().double())
    True
    """
    device = counts.data.device
    candidates = torch.as_tensor(candidates, device=device).long()
    n_cells, k = _check_pairs(candidates, counts, n_codes)
    backend = _resolve_backend(backend, device)
    out = torch.zeros(n_cells * k, dtype=torch.float64, device=device)
    if n_cells == 0 or k == 0:
        return out.reshape(n_cells, k)
    chunk_size = chunk_size or max(1, max_elements // max(counts.n_genes, 1))
    pairs = torch.arange(n_cells * k, device=device)
    for codes, chunk_pairs, rows in _group_by_code(pairs, candidates.reshape(-1), chunk_size):
        table = log_profiles(codes)
        if table.shape != (codes.shape[0], counts.n_genes):
            raise ValueError(
                f"log_profiles returned shape {tuple(table.shape)}, expected ({codes.shape[0]}, {counts.n_genes})."
            )
        cells = torch.div(chunk_pairs, k, rounding_mode="floor")
        if backend == "torch":
            out[chunk_pairs] = _torch_sparse_dot(table.float(), rows, cells, counts, max_elements)
        else:
            result = np.empty(rows.shape[0])
            _nb_sparse_dot(
                _numpy(table, np.float32),
                _numpy(rows),
                _numpy(cells),
                _numpy(counts.indptr),
                _numpy(counts.indices),
                _numpy(counts.data, np.float32),
                result,
            )
            out[chunk_pairs] = torch.from_numpy(result)
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
