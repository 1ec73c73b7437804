"""The similarity kernel's likelihood terms compiled with numba (CPU): the terms of :mod:`._likelihood`, fused.

The kernels loop over codes (in parallel), grid points and genes, and evaluate the element functions of
:mod:`._likelihood` (:func:`~._likelihood.nb_zero`, :func:`~._likelihood.zinb_mixture`, ...), compiled here for
single numbers. The transcendental functions they take as arguments come from one table: a cubic Hermite
interpolation of ``log1p(exp(-v))`` on ``[0, 40]`` (relative interpolation error about 4e-8, plus float32
rounding) gives softplus, ``logaddexp(x, y) = x + softplus(y - x)`` and, from its slope, the sigmoid. Sums are
accumulated in float64. On a CPU this is several times faster than the same terms evaluated array by array in
torch (``benchmarks/results/likelihood_core.md``).
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from . import _likelihood as core
from ._counts import CountsCSR
from ._kernel_terms import DecodedChunk

_STEPS = 16  # table knots per unit
_V_MAX = 40.0  # log1p(exp(-v)) < 4.3e-18 beyond
_N = int(_V_MAX * _STEPS)


def _hermite_table(value: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """Cubic (Hermite) coefficients of a function of ``v >= 0`` from its values and slopes at the knots.

    One row per interval of width 1/16, and a last row of zeros for ``v`` beyond the table.
    """
    h = 1.0 / _STEPS
    c0, c1 = value[:-1], slope[:-1] * h
    c2 = 3 * (value[1:] - value[:-1]) - (2 * slope[:-1] + slope[1:]) * h
    c3 = 2 * (value[:-1] - value[1:]) + (slope[:-1] + slope[1:]) * h
    table = np.stack([c0, c1, c2, c3], axis=1)
    return np.vstack([table, np.zeros((1, 4))]).astype(np.float32)


_KNOTS = np.arange(_N + 1, dtype=np.float64) / _STEPS
#: ``log1p(exp(-v))`` on ``[0, 40]`` (relative interpolation error ~4e-8); its slope is ``-sigmoid(-v)``.
_SOFTPLUS_TABLE = _hermite_table(np.log1p(np.exp(-_KNOTS)), -1.0 / (1.0 + np.exp(_KNOTS)))
_F0 = np.float32(0.0)
_F1 = np.float32(1.0)
_inline = numba.njit(inline="always", fastmath=True, cache=True)
_parallel = numba.njit(fastmath=True, cache=True, parallel=True)


# -- primitives from the tables, and the element functions of the core compiled with them --------------------
@_inline
def _tabulated(table, v):  # pragma: no cover - compiled; f(|v|) and its derivative in |v|
    position = min(abs(v) * np.float32(_STEPS), np.float32(_N))
    i = int(position)
    f = position - np.float32(i)
    value = table[i, 0] + f * (table[i, 1] + f * (table[i, 2] + f * table[i, 3]))
    slope = (table[i, 1] + f * (np.float32(2.0) * table[i, 2] + f * np.float32(3.0) * table[i, 3])) * np.float32(_STEPS)
    return value, slope


@_inline
def _softplus(u):  # pragma: no cover - compiled
    return max(u, _F0) + _tabulated(_SOFTPLUS_TABLE, u)[0]


@_inline
def _softplus_sigmoid(u):  # pragma: no cover - compiled; softplus(u) and sigmoid(u) = 1 - sigmoid(-u)
    value, slope = _tabulated(_SOFTPLUS_TABLE, u)  # slope = -sigmoid(-|u|)
    return max(u, _F0) + value, (_F1 + slope) if u >= _F0 else -slope


@_inline
def _logaddexp(x, y):  # pragma: no cover - compiled; x + softplus(y - x), as the weight below reads it
    return x + _softplus(y - x)


_nb_zero = _inline(core.nb_zero)
_zinb_mixture = _inline(core.zinb_mixture)
_zero_slope = _inline(core.zero_slope)
_nb_gain = _inline(core.nb_gain)
_zinb_gain = _inline(core.zinb_gain)


# -- kernels ------------------------------------------------------------------------------------------
@_parallel
def _dense_grid(c_tab, theta_tab, zi, grid, values, slopes):  # pragma: no cover - compiled
    """Dense part and its derivative at every grid point; ``c = log theta - log rho``, so ``u = t - c``."""
    row_theta = 1 if theta_tab.shape[0] > 1 else 0
    zinb = zi.shape[0] > 0
    n_genes = c_tab.shape[1]
    for r in numba.prange(c_tab.shape[0]):
        rt = r * row_theta
        base = 0.0  # zinb_zero = mixture - softplus(pi), the softplus summed once per code
        if zinb:
            for g in range(n_genes):
                base += _softplus(zi[r, g])
        for k in range(grid.shape[0]):
            t = grid[k]
            value = 0.0
            slope = 0.0
            for g in range(n_genes):
                theta = theta_tab[rt, g]
                s, sigmoid_u = _softplus_sigmoid(t - c_tab[r, g])
                a = _nb_zero(theta, s)
                if zinb:
                    value += _zinb_mixture(a, zi[r, g], _logaddexp)
                    # core.zero_weight, exp(a - logaddexp(pi, a)) = sigmoid(a - pi), from the same table entry
                    weight = _softplus_sigmoid(a - zi[r, g])[1]
                    slope += _zero_slope(theta, sigmoid_u, weight)
                else:
                    value += a
                    slope += _zero_slope(theta, sigmoid_u)
            values[r, k] = value - base
            slopes[r, k] = slope


@_parallel
def _dense_pairs(c_tab, theta_tab, zi, rows, t, out):  # pragma: no cover - compiled
    row_theta = 1 if theta_tab.shape[0] > 1 else 0
    zinb = zi.shape[0] > 0
    for p in numba.prange(rows.shape[0]):
        r = rows[p]
        rt = r * row_theta
        tt = t[p]
        value = 0.0
        base = 0.0
        for g in range(c_tab.shape[1]):
            a = _nb_zero(theta_tab[rt, g], _softplus(tt - c_tab[r, g]))
            if zinb:
                value += _zinb_mixture(a, zi[r, g], _logaddexp)
                base += _softplus(zi[r, g])
            else:
                value += a
        out[p] = value - base


@_parallel
def _sparse(c_tab, theta_tab, zi, rows, cells, t, indptr, indices, data, out):  # pragma: no cover - compiled
    row_theta = 1 if theta_tab.shape[0] > 1 else 0
    zinb = zi.shape[0] > 0
    for p in numba.prange(rows.shape[0]):
        r = rows[p]
        rt = r * row_theta
        cell = cells[p]
        tt = t[p]
        gain = 0.0
        for e in range(indptr[cell], indptr[cell + 1]):
            g = indices[e]
            u = tt - c_tab[r, g]
            s = _softplus(u)
            gain += _nb_gain(data[e], u, s)
            if zinb:
                gain += _zinb_gain(_nb_zero(theta_tab[rt, g], s), zi[r, g], _softplus)
        out[p] = gain


@numba.njit(fastmath=True, cache=True)
def _hermite(values, slopes, start, step, rows, t, out):  # pragma: no cover - compiled
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


@_parallel
def _sparse_dot(table, rows, cells, indptr, indices, data, out):  # pragma: no cover - compiled
    for p in numba.prange(rows.shape[0]):
        r = rows[p]
        cell = cells[p]
        acc = 0.0
        for e in range(indptr[cell], indptr[cell + 1]):
            acc += data[e] * table[r, indices[e]]
        out[p] = acc


# -- entry points (torch in, torch out) ---------------------------------------------------------------
def _numpy(x: torch.Tensor, dtype: type | None = None) -> np.ndarray:
    array = x.detach().cpu().numpy()
    return np.ascontiguousarray(array if dtype is None else array.astype(dtype, copy=False))


class NumbaCounts:
    """The counts as the contiguous arrays the kernels read."""

    def __init__(self, counts: CountsCSR):
        self.indptr, self.indices = _numpy(counts.indptr), _numpy(counts.indices)
        self.data = _numpy(counts.data, np.float32)


def chunk_log_likelihood(
    chunk: DecodedChunk,
    rows: torch.Tensor,
    cells: torch.Tensor,
    t: torch.Tensor,
    counts: NumbaCounts,
    grid: torch.Tensor | None,
) -> torch.Tensor:
    """Dense (on ``grid``, interpolated, or per pair) plus sparse part of code ``rows[p]`` for cell ``cells[p]``.

    The numba counterpart of the torch terms of :mod:`._kernel_terms`; float64 ``(pairs,)``.
    """
    c_tab = _numpy(chunk.log_theta - chunk.log_rho, np.float32)  # log theta - log rho
    theta_tab = _numpy(chunk.log_theta.exp(), np.float32)
    zi = (
        np.zeros((0, c_tab.shape[1]), dtype=np.float32)
        if chunk.zi_logits is None
        else _numpy(chunk.zi_logits, np.float32)
    )
    rows_np, t_np = _numpy(rows), _numpy(t, np.float32)
    dense = np.empty(rows_np.shape[0])
    if grid is not None:
        grid_np = _numpy(grid, np.float32)
        values = np.empty((c_tab.shape[0], grid_np.shape[0]))
        slopes = np.empty_like(values)
        _dense_grid(c_tab, theta_tab, zi, grid_np, values, slopes)
        step = (float(grid_np[-1]) - float(grid_np[0])) / (grid_np.shape[0] - 1)
        _hermite(values, slopes, float(grid_np[0]), step, rows_np, t_np.astype(np.float64), dense)
    else:
        _dense_pairs(c_tab, theta_tab, zi, rows_np, t_np, dense)
    sparse = np.empty(rows_np.shape[0])
    _sparse(c_tab, theta_tab, zi, rows_np, _numpy(cells), t_np, counts.indptr, counts.indices, counts.data, sparse)
    return torch.from_numpy(dense + sparse)


def sparse_dot(table: torch.Tensor, rows: torch.Tensor, cells: torch.Tensor, counts: NumbaCounts) -> torch.Tensor:
    """``sum_g x_cg table[r, g]`` over the non-zero counts of cell ``cells[p]`` and row ``rows[p]``, float64."""
    out = np.empty(rows.shape[0])
    _sparse_dot(_numpy(table, np.float32), _numpy(rows), _numpy(cells), counts.indptr, counts.indices, counts.data, out)
    return torch.from_numpy(out)
