"""The similarity kernel's likelihood terms for chunks of decoded candidates (torch, any device).

A chunk of candidate codes is decoded once under one target batch (:func:`decode_chunk`); the terms of
:mod:`speciesvi.module._likelihood` are then evaluated from it with ``u = log rho + t - log theta`` for a cell of
log library ``t``: the dense part (the zero-count log-probability summed over all genes) on a grid of ``t`` with
its derivative (:func:`dense_grid`, interpolated by :func:`hermite_interpolate`) or per pair
(:func:`dense_pairs`), and the sparse part at each cell's non-zero counts (:func:`sparse_part`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ._components import ExpressionDecoder
from ._counts import CountsCSR, pair_counts
from ._likelihood import nb_zero, nonzero_gain, row_sums_at, zero_terms, zero_terms_slope


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

    def rows(self, rows: torch.Tensor | slice) -> DecodedChunk:
        """The chunk restricted to some of its codes (a shared ``log_theta`` row stays shared)."""
        log_theta = self.log_theta[rows] if self.log_theta.shape[0] > 1 else self.log_theta
        zi_logits = self.zi_logits[rows] if self.zi_logits is not None else None
        return DecodedChunk(self.log_rho[rows], log_theta, zi_logits)


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


def dense_part(
    chunk: DecodedChunk, log_library: torch.Tensor | float, derivative: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Row sums over all genes of the zero-count log-probability, and optionally their ``d/d log l``.

    ``log_library`` is a float or ``(rows, 1)``.
    """
    u = (chunk.log_rho + log_library).sub_(chunk.log_theta)
    theta = chunk.log_theta.exp()
    terms = zero_terms(u, theta, chunk.zi_logits)
    value = terms.value.sum(-1)
    return value, zero_terms_slope(u, theta, terms).sum(-1) if derivative else None


def dense_grid(chunk: DecodedChunk, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The dense part of every code of the chunk and its derivative at each log library of ``grid``, float64."""
    values, slopes = zip(*(dense_part(chunk, t, derivative=True) for t in grid.tolist()), strict=True)
    return torch.stack(values, dim=1).double(), torch.stack(slopes, dim=1).double()


def dense_pairs(chunk: DecodedChunk, rows: torch.Tensor, t: torch.Tensor, max_elements: int) -> torch.Tensor:
    """The dense part of code ``rows[p]`` at log library ``t[p]`` for every pair ``p``, float64."""
    step = max(1, max_elements // chunk.n_genes)
    parts = [torch.zeros(0, dtype=torch.float64, device=rows.device)]
    for lo in range(0, rows.shape[0], step):
        value, _ = dense_part(chunk.rows(rows[lo : lo + step]), t[lo : lo + step].unsqueeze(1), derivative=False)
        parts.append(value.double())
    return torch.cat(parts)


def sparse_part(
    chunk: DecodedChunk,
    rows: torch.Tensor,
    cells: torch.Tensor,
    t: torch.Tensor,
    counts: CountsCSR,
    max_elements: int,
) -> torch.Tensor:
    """The sparse part (without the count terms) of code ``rows[p]`` for cell ``cells[p]`` of log library ``t[p]``, float64."""
    out = torch.zeros(rows.shape[0], dtype=torch.float64, device=rows.device)
    n_genes = chunk.n_genes
    flat_rho = chunk.log_rho.reshape(-1)
    flat_theta = chunk.log_theta.reshape(-1)
    per_row_theta = chunk.log_theta.shape[0] > 1
    flat_pi = chunk.zi_logits.reshape(-1) if chunk.zi_logits is not None else None
    for lo, hi, pair_of, genes, x in pair_counts(counts, cells, max_elements):
        flat = rows[lo:hi][pair_of] * n_genes + genes
        log_theta = flat_theta[flat] if per_row_theta else flat_theta[genes]
        u = (flat_rho[flat] + t[lo:hi][pair_of]).sub_(log_theta)
        s = F.softplus(u)
        if flat_pi is None:
            gain = nonzero_gain(x, u, s)
        else:
            gain = nonzero_gain(x, u, s, a=nb_zero(log_theta.exp(), s), zi_logits=flat_pi[flat])
        out[lo:hi] = row_sums_at(gain, pair_of, hi - lo).double()
    return out


def sparse_dot(
    table: torch.Tensor, rows: torch.Tensor, cells: torch.Tensor, counts: CountsCSR, max_elements: int
) -> torch.Tensor:
    """``sum_g x_cg table[r, g]`` over the non-zero counts of cell ``cells[p]`` and row ``rows[p]``, float64."""
    out = torch.zeros(rows.shape[0], dtype=torch.float64, device=rows.device)
    for lo, hi, pair_of, genes, x in pair_counts(counts, cells, max_elements):
        values = x * table.reshape(-1)[rows[lo:hi][pair_of] * table.shape[1] + genes]
        out[lo:hi] = row_sums_at(values, pair_of, hi - lo).double()
    return out


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
