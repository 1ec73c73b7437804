"""Per-cell (zero-inflated) negative binomial log-likelihoods that exploit sparse counts.

They equal ``scvi.distributions.NegativeBinomial(mu, theta).log_prob(x).sum(-1)`` and the ZINB
counterpart (tested against them), but evaluate the ``lgamma`` terms, which vanish where ``x == 0``,
only on the non-zero counts. Single-cell counts are mostly zeros, so this removes most of the
``lgamma``/``digamma`` work of a training step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scvi.distributions import NegativeBinomial, ZeroInflatedNegativeBinomial

EPS = 1e-8


def _row_sums_at(values: torch.Tensor, index: torch.Tensor, n_rows: int, n_cols: int) -> torch.Tensor:
    """Per-row sums of ``values`` given at flat positions ``index`` of an ``(n_rows, n_cols)`` array."""
    rows = torch.div(index, n_cols, rounding_mode="floor")
    return torch.zeros(n_rows, dtype=values.dtype, device=values.device).index_add(0, rows, values)


def _sparse_terms(
    x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, log_theta_mu: torch.Tensor, count_terms: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row sums over the non-zero counts of ``x (log mu - log(theta + mu))`` (+ the lgamma terms).

    Returns the sums, the flat positions of the non-zero counts and the number of rows.
    """
    n_cols = x.shape[-1]
    n_rows = x.numel() // n_cols
    index = x.reshape(-1).nonzero().squeeze(1)
    counts = x.reshape(-1)[index]
    terms = counts * (torch.log(mu.reshape(-1)[index] + EPS) - log_theta_mu.reshape(-1)[index])
    if count_terms:
        dispersion = theta.expand_as(mu).reshape(-1)[index]
        terms = terms + torch.lgamma(counts + dispersion) - torch.lgamma(dispersion) - torch.lgamma(counts + 1)
    return _row_sums_at(terms, index, n_rows, n_cols), index, n_rows


def nb_log_prob_sum(
    x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, *, count_terms: bool = True
) -> torch.Tensor:
    """Sum over genes of the negative binomial log-probability of counts ``x`` (mean ``mu``, inverse dispersion ``theta``).

    ``count_terms=False`` leaves out ``lgamma(x + theta) - lgamma(theta) - lgamma(x + 1)``, which does not
    depend on ``mu``: enough to compare the likelihood of the same counts under different means.
    """
    log_theta_mu = torch.log(theta + mu + EPS)
    dense = (theta * (torch.log(theta + EPS) - log_theta_mu)).sum(-1)
    sparse, _, _ = _sparse_terms(x, mu, theta, log_theta_mu, count_terms)
    return dense + sparse.reshape(dense.shape)


def zinb_log_prob_sum(
    x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, zi_logits: torch.Tensor, *, count_terms: bool = True
) -> torch.Tensor:
    """Sum over genes of the zero-inflated negative binomial log-probability (scvi-tools' parameterisation).

    With ``a = theta (log theta - log(theta + mu))`` and zero-inflation logits ``pi``, a zero count has
    log-probability ``softplus(a - pi) - softplus(-pi)`` and a positive count
    ``a - pi - softplus(-pi) + x (log mu - log(theta + mu))`` (+ lgamma terms). The zero case is summed
    densely, the positive case is added as a correction at the non-zero counts only.
    ``count_terms`` as in :func:`nb_log_prob_sum`.
    """
    log_theta_mu = torch.log(theta + mu + EPS)
    a = theta * (torch.log(theta + EPS) - log_theta_mu)
    zero_case = F.softplus(a - zi_logits)
    dense = (zero_case - F.softplus(-zi_logits)).sum(-1)
    sparse, index, n_rows = _sparse_terms(x, mu, theta, log_theta_mu, count_terms)
    correction = (a - zi_logits - zero_case).reshape(-1)[index]
    sparse = sparse + _row_sums_at(correction, index, n_rows, x.shape[-1])
    return dense + sparse.reshape(dense.shape)


def count_log_prob_sum(
    px: NegativeBinomial | ZeroInflatedNegativeBinomial, x: torch.Tensor, *, count_terms: bool = True
) -> torch.Tensor:
    """Per-cell log-likelihood of counts ``x`` under an scvi-tools NB or ZINB distribution ``px``."""
    if isinstance(px, ZeroInflatedNegativeBinomial):
        return zinb_log_prob_sum(x, px.mu, px.theta, px.zi_logits, count_terms=count_terms)
    if isinstance(px, NegativeBinomial):
        return nb_log_prob_sum(x, px.mu, px.theta, count_terms=count_terms)
    return px.log_prob(x).sum(-1)


def logits_log_prob_sum(
    logits: torch.Tensor,
    log_library: torch.Tensor,
    log_theta: torch.Tensor,
    x: torch.Tensor,
    zi_logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-cell NB or ZINB log-likelihood of counts ``x`` straight from decoder outputs, without ``lgamma`` terms.

    Equals ``count_log_prob_sum(px, x, count_terms=False)`` for ``mu = softmax(logits) * exp(log_library)``,
    ``theta = exp(log_theta)``, in fewer passes over the ``(..., cells, genes)`` arrays: with
    ``u = log(mu / theta)`` and ``s = softplus(u) = log(1 + mu / theta)``, a zero count has NB log-probability
    ``a = -theta s`` and a positive count adds ``x (u - s)``; zero inflation turns the zero case into
    ``logaddexp(pi, a) - softplus(pi)``. The positive-count terms are gathered at the non-zeros of ``x`` only.
    For comparing candidate means of the same counts (the lgamma terms depend on the counts only).

    Parameters
    ----------
    logits
        Decoder logits, ``(..., cells, genes)`` (any float dtype; computed in float32).
    log_library
        Log library size per cell, ``(cells, 1)``.
    log_theta
        Log inverse dispersion, broadcastable to ``logits``.
    x
        Counts, ``(cells, genes)``.
    zi_logits
        Zero-inflation logits (ZINB), shaped as ``logits``; ``None`` for NB.

    Returns
    -------
    torch.Tensor
        ``(..., cells)``.
    """
    logits = logits.float()
    u = logits - (torch.logsumexp(logits, dim=-1, keepdim=True) - log_library)
    u = u.sub_(log_theta)
    s = F.softplus(u)
    rows, cols = x.nonzero(as_tuple=True)
    positive = x[rows, cols] * (u[..., rows, cols] - s[..., rows, cols])
    a = s.mul_(-log_theta.exp())  # s is not needed any more
    if zi_logits is None:
        dense = a.sum(-1)
    else:
        pi = zi_logits.float()
        zero_case = torch.logaddexp(pi, a)
        dense = zero_case.sum(-1) - F.softplus(pi).sum(-1)
        # a positive count has log(1 - p_zi) + a + x (u - s) instead of the zero case
        positive = positive + a[..., rows, cols] - zero_case[..., rows, cols]
    sums = torch.zeros(*positive.shape[:-1], x.shape[0], dtype=positive.dtype, device=positive.device)
    return dense + sums.index_add_(-1, rows, positive)
