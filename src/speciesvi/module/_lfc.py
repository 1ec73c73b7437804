"""Tensor math of the homolog log fold changes: decoding homologous expression and streaming statistics.

Nothing here knows about AnnData or the model classes: the model gathers the latent posteriors of the
cells of one cell type, and these functions draw from them, decode and summarise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import chi2
from torch.nn import functional as F

from ._components import ExpressionDecoder

#: Largest number of elements (draws x genes) of each buffer kept for the medians (32 MB in float32).
MEDIAN_BUFFER_ELEMENTS = 8 * 2**20
#: Fewest draws the medians are computed from (when ``n_samples`` allows).
MIN_MEDIAN_DRAWS = 512
#: Draws that share one random re-pairing of the genes in the null comparison.
NULL_GROUP_SIZE = 16
#: Abundance classes of the null: genes are re-paired only with genes of the same class (equal-frequency
#: bins of mean log expression in their own species; 24 as Seurat's control genes of ``AddModuleScore``).
NULL_ABUNDANCE_BINS = 24


def mahalanobis_inliers(z: np.ndarray, confidence_level: float = 0.9) -> np.ndarray:
    """Cells whose squared Mahalanobis distance to the mean lies within the ``confidence_level`` chi-square quantile.

    Under a Gaussian cloud of cells in a ``d``-dimensional latent space the squared Mahalanobis distance
    follows a chi-square distribution with ``d`` degrees of freedom, so about ``confidence_level`` of the
    cells are kept. With fewer cells than ``d + 2`` the covariance cannot be estimated and all cells are
    kept; a singular covariance uses its pseudo-inverse.

    Parameters
    ----------
    z
        ``(n_cells, d)`` latent posterior means of the cells of one type.
    confidence_level
        Chi-square quantile in ``(0, 1]``; 1 keeps every cell.

    Returns
    -------
    numpy.ndarray
        ``(n_cells,)`` boolean mask of the inliers.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> z = np.vstack([rng.normal(size=(500, 2)), [[12.0, 12.0]]])
    >>> mask = mahalanobis_inliers(z, 0.9)
    >>> bool(mask[-1]), round(float(mask[:-1].mean()), 1)
    (False, 0.9)
    """
    z = np.asarray(z, dtype=np.float64)
    n, d = z.shape
    if n < d + 2 or confidence_level >= 1.0:
        return np.ones(n, dtype=bool)
    centred = z - z.mean(axis=0)
    precision = np.linalg.pinv(np.cov(centred, rowvar=False))
    distance = np.einsum("ij,jk,ik->i", centred, precision, centred)
    return distance <= chi2.ppf(confidence_level, d)


class HomologousDecoder:
    """One decoder restricted to the homologous genes and averaged over a set of batches.

    The expression of a latent code is the mean of the decoded count distribution per unit library size,
    renormalised over the homologous genes: ``rho`` for a negative binomial, ``(1 - pi) rho`` for a
    zero-inflated one (``pi``: the zero-inflation probability), which is what a mean of library-normalised
    counts estimates. The batch effect is averaged out in the decoder's last hidden layer (the mean of the
    batches' hidden layers, decoded once); for the expression logits, which are linear in the hidden layer,
    this is the average over the batches in log space.

    Parameters
    ----------
    decoder
        An :class:`~speciesvi.module.ExpressionDecoder`.
    genes
        Positions of the homologous genes among the decoder's outputs.
    batches
        Batch indices to average over (at least one).
    dtype
        Precision of the output layer's matrix product (the bulk of the work); ``torch.bfloat16`` runs
        several times faster on GPUs and CPUs with bf16 matrix units, with logits rounded to about 3
        significant digits. The hidden layers, softmax and everything downstream stay in float32.
    """

    def __init__(
        self,
        decoder: ExpressionDecoder,
        genes: torch.Tensor,
        batches: torch.Tensor,
        dtype: torch.dtype = torch.float32,
    ):
        if batches.numel() == 0:
            raise ValueError("HomologousDecoder needs at least one batch to decode under.")
        self.decoder = decoder
        self.batches = [int(b) for b in batches.reshape(-1).tolist()]
        genes = genes.to(decoder.logits.weight.device).long()
        self.weight = decoder.logits.weight.detach()[genes].to(dtype).contiguous()
        self.bias = decoder.logits.bias.detach()[genes].to(dtype).contiguous()
        zi = decoder.zi_logits
        self.zi_weight = None if zi is None else zi.weight.detach()[genes].to(dtype).contiguous()
        self.zi_bias = None if zi is None else zi.bias.detach()[genes].to(dtype).contiguous()

    def expression(self, z: torch.Tensor) -> torch.Tensor:
        """Expression renormalised over the homologous genes, ``(n_draws, n_homologous)``; rows sum to 1.

        ``z`` is moved to the decoder's device and the result back to ``z``'s.
        """
        device, z = z.device, z.to(self.weight.device)
        hidden = None
        for batch in self.batches:
            index = torch.full((z.shape[0], 1), batch, device=z.device, dtype=torch.long)
            h = self.decoder.hidden(z, index)
            hidden = h if hidden is None else hidden.add_(h)
        hidden = hidden.div_(len(self.batches)).to(self.weight.dtype)
        logits = F.linear(hidden, self.weight, self.bias).float()
        if self.zi_weight is not None:  # log(1 - pi) = -softplus(zero-inflation logit)
            logits = logits.sub_(F.softplus(F.linear(hidden, self.zi_weight, self.zi_bias).float()))
        return torch.softmax(logits, dim=-1).to(device)


@dataclass
class LatentCells:
    """Posteriors of the cells of one cell type in one species (everything on one device).

    Attributes
    ----------
    z_mean, z_std
        ``(n_cells, n_latent)`` mean and standard deviation of the Normal posterior of z.
    log_library_mean, log_library_std
        ``(n_cells,)`` mean and standard deviation of the Normal posterior of the log library size.
    """

    z_mean: torch.Tensor
    z_std: torch.Tensor
    log_library_mean: torch.Tensor
    log_library_std: torch.Tensor

    @property
    def n_cells(self) -> int:
        """Number of cells."""
        return int(self.z_mean.shape[0])

    def sample_z(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` draws of z: a uniformly chosen cell, then z from its Normal posterior."""
        cells = torch.randint(self.n_cells, (n,), generator=generator, device=self.z_mean.device)
        noise = torch.randn(n, self.z_mean.shape[1], generator=generator, device=self.z_mean.device)
        return self.z_mean[cells] + self.z_std[cells] * noise

    def sample_log_library(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` draws of the log library size of a uniformly chosen cell."""
        cells = torch.randint(self.n_cells, (n,), generator=generator, device=self.z_mean.device)
        noise = torch.randn(n, generator=generator, device=self.z_mean.device)
        return self.log_library_mean[cells] + self.log_library_std[cells] * noise


def _latent_draws(target: LatentCells, context: LatentCells, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` latent draws, half (rounded at random) from the target cells and half from the context cells."""
    n_target = n // 2 + int(torch.randint(2, (1,), generator=generator, device=generator.device).item()) * (n % 2)
    return torch.cat([target.sample_z(n_target, generator), context.sample_z(n - n_target, generator)])


def sample_homologous_expression(
    target_decoder: HomologousDecoder,
    context_decoder: HomologousDecoder,
    target: LatentCells,
    context: LatentCells,
    n_samples: int,
    batch_size: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode the same latent draws with both species' decoders (half the draws from each species' cells).

    Returns
    -------
    target_expression, context_expression
        ``(n_samples, n_homologous)`` expression renormalised over the homologous genes (rows sum to 1),
        on the CPU.
    """
    target_parts, context_parts = [], []
    for start in range(0, n_samples, batch_size):
        z = _latent_draws(target, context, min(batch_size, n_samples - start), generator)
        target_parts.append(target_decoder.expression(z).cpu())
        context_parts.append(context_decoder.expression(z).cpu())
    return torch.cat(target_parts), torch.cat(context_parts)


def abundance_bins(log_expression: torch.Tensor, n_bins: int = NULL_ABUNDANCE_BINS) -> torch.Tensor:
    """Equal-frequency abundance class of every gene, ``0`` (lowest) to ``n_bins - 1``.

    Parameters
    ----------
    log_expression
        ``(n_draws, n_genes)`` log expression of decoded draws; genes are ranked by their mean.
    n_bins
        Number of classes (at most the number of genes).

    Returns
    -------
    torch.Tensor
        ``(n_genes,)`` long tensor; class ``k`` holds the genes of rank ``[k n / n_bins, (k + 1) n / n_bins)``.
    """
    n_genes = log_expression.shape[1]
    n_bins = max(1, min(n_bins, n_genes))
    ranks = torch.empty(n_genes, dtype=torch.long, device=log_expression.device)
    ranks[torch.argsort(log_expression.mean(0))] = torch.arange(n_genes, device=log_expression.device)
    return ranks * n_bins // n_genes


def matched_permutation(bins_from: torch.Tensor, bins_to: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random one-to-one re-pairing that gives every gene a partner of the same abundance class.

    ``perm[i]`` is a uniformly random gene ``j`` with ``bins_to[j] == bins_from[i]``, without repeats. Both
    class vectors must hold every class equally often (as :func:`abundance_bins` makes them).

    Examples
    --------
    >>> bins = torch.tensor([0, 0, 1, 1, 2, 2])
    >>> perm = matched_permutation(bins, bins.flip(0), torch.Generator().manual_seed(0))
    >>> bool((bins.flip(0)[perm] == bins).all()), sorted(perm.tolist())
    (True, [0, 1, 2, 3, 4, 5])
    """
    noise = torch.rand(bins_to.shape[0], generator=generator, device=generator.device).to(bins_to.device)
    shuffled_to = torch.argsort(bins_to.double() + noise.double())  # grouped by class, random within
    perm = torch.empty_like(shuffled_to)
    perm[torch.argsort(bins_from, stable=True)] = shuffled_to
    return perm


def _medians(x: torch.Tensor) -> np.ndarray:
    """Median of every row of ``x`` (``(genes, draws)``, contiguous), by partial sorting (linear time)."""
    values = x.cpu().numpy()
    m = values.shape[1]
    k = m // 2
    if m % 2:
        return np.partition(values, k, axis=1)[:, k].astype(np.float64)
    part = np.partition(values, (k - 1, k), axis=1)
    return 0.5 * (part[:, k - 1].astype(np.float64) + part[:, k])


@torch.no_grad()
def homolog_lfc_statistics(
    target_decoder: HomologousDecoder,
    context_decoder: HomologousDecoder,
    target: LatentCells,
    context: LatentCells,
    n_samples: int,
    delta: float,
    eps: float,
    batch_size: int,
    generator: torch.Generator,
    progress: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Monte Carlo log2 fold changes of homologous expression, target over context, for one cell type.

    Every draw picks a cell of the type (each species supplies half of the draws), samples z from its
    Normal posterior and decodes that z with both decoders; ``lfc = log2(rho_T + eps) - log2(rho_C + eps)``
    per homologous gene pair. The spread of the draws reflects both the posterior uncertainty of each cell
    and the variety of cells of the type in both species; ``p`` is the share of draws with
    ``|lfc| > delta``.

    The null comparison re-pairs the genes at random within abundance classes: every group of
    ``NULL_GROUP_SIZE`` draws gets a fresh random permutation, which replaces the context gene of every pair
    (even groups) or the target gene (odd groups) by a random gene of the same abundance class in its own
    species (``NULL_ABUNDANCE_BINS`` equal-frequency classes of mean log expression, from the first batch of
    draws), so each pair meets many random partners from both species. Its statistics say what a gene pair
    looks like when the pairing carries no information beyond the genes' abundance: a pair flagged on the
    null is flagged because its two genes are both, say, highly expressed and noisy, not because of homology.

    ``p`` uses all draws; the medians and the null comparison use the first ``m`` draws (a random subset;
    ``m`` is at least ``MIN_MEDIAN_DRAWS`` and as many as fit ``MEDIAN_BUFFER_ELEMENTS`` per buffer).

    Parameters
    ----------
    target_decoder, context_decoder
        The decoders, restricted to the same homologous gene pairs in the same order.
    target, context
        Posteriors of the (inlier) cells of the type in each species.
    n_samples
        Number of latent draws.
    delta
        Threshold of ``|lfc|`` (log2 units) for the probabilities.
    eps
        Pseudo-expression added before taking logs.
    batch_size
        Draws decoded at once.
    generator
        Random generator (on the device of the tensors).
    progress
        Optional callable, given the number of draws of every finished batch.

    Returns
    -------
    dict
        Arrays over the gene pairs: ``lfc``, ``p``, ``lfc_null``, ``p_null``, ``rho_target``,
        ``rho_context``, ``mu_target``, ``mu_context`` (medians over the draws; ``mu`` is ``rho`` times a
        library size drawn from the posterior of a random cell of that species and type), and the number
        of draws behind the medians, ``n_median_draws``.

    Examples
    --------
    >>> import torch
    >>> from speciesvi.module import ExpressionDecoder
    >>> decoders = [ExpressionDecoder(2, 5, 1, dims=(8,)).eval() for _ in range(2)]
    >>> genes, batches = torch.arange(5), torch.zeros(1, dtype=torch.long)
    >>> cells = LatentCells(torch.zeros(10, 2), torch.ones(10, 2), torch.full((10,), 7.0), torch.ones(10))
    >>> stats = homolog_lfc_statistics(
    ...     HomologousDecoder(decoders[0], genes, batches),
    ...     HomologousDecoder(decoders[1], genes, batches),
    ...     cells,
    ...     cells,
    ...     n_samples=1000,
    ...     delta=1.0,
    ...     eps=1e-6,
    ...     batch_size=256,
    ...     generator=torch.Generator().manual_seed(0),
    ... )
    >>> stats["lfc"].shape
    (5,)
    """
    n_genes = target_decoder.weight.shape[0]
    device = target.z_mean.device
    n_median = int(min(n_samples, max(MIN_MEDIAN_DRAWS, MEDIAN_BUFFER_ELEMENTS // max(n_genes, 1))))
    # draws of the medians, genes x draws so that every gene's draws are contiguous
    rho_t = torch.empty(n_genes, n_median, device=device)
    rho_c = torch.empty(n_genes, n_median, device=device)
    null_lfc = torch.empty(n_genes, n_median, device=device)
    exceed = torch.zeros(n_genes, device=device, dtype=torch.float64)
    bins_target = bins_context = None
    done = 0
    while done < n_samples:
        n = min(batch_size, n_samples - done)
        z = _latent_draws(target, context, n, generator)
        lt, lc = target_decoder.expression(z), context_decoder.expression(z)
        stop = max(0, min(n, n_median - done))
        if stop:
            rho_t[:, done : done + stop] = lt[:stop].T
            rho_c[:, done : done + stop] = lc[:stop].T
        lt, lc = lt.add_(eps).log2_(), lc.add_(eps).log2_()
        if bins_target is None:
            bins_target, bins_context = abundance_bins(lt), abundance_bins(lc)
        for row in range(0, stop, NULL_GROUP_SIZE):
            rows = slice(row, min(row + NULL_GROUP_SIZE, stop))
            if ((done + row) // NULL_GROUP_SIZE) % 2 == 0:
                perm = matched_permutation(bins_target, bins_context, generator)
                null_lfc[:, done + row : done + rows.stop] = (lt[rows] - lc[rows][:, perm]).T
            else:
                perm = matched_permutation(bins_context, bins_target, generator)
                null_lfc[:, done + row : done + rows.stop] = (lt[rows][:, perm] - lc[rows]).T
        exceed += lt.sub_(lc).abs_().gt_(delta).sum(0)  # in place: 1.0 where |lfc| > delta
        done += n
        if progress is not None:
            progress(n)

    stats = {
        "rho_target": _medians(rho_t),
        "rho_context": _medians(rho_c),
        "mu_target": _medians(rho_t * target.sample_log_library(n_median, generator).exp()),
        "mu_context": _medians(rho_c * context.sample_log_library(n_median, generator).exp()),
    }
    stats["lfc"] = _medians(rho_t.add_(eps).log2_().sub_(rho_c.add_(eps).log2_()))
    stats["p"] = (exceed / n_samples).cpu().numpy()
    stats["lfc_null"] = _medians(null_lfc)
    stats["p_null"] = null_lfc.abs_().gt_(delta).sum(1).double().div_(n_median).cpu().numpy()
    stats["n_median_draws"] = n_median
    return stats
