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


class _DecoderLogLikelihood(torch.autograd.Function):
    """Per-cell NB/ZINB log-likelihood from decoder outputs, with a hand-written backward pass.

    Autograd through softmax, ``mu = rho * l``, the distribution's ``log_prob`` and the gathers at the
    non-zero counts records some forty passes over the ``(cells, genes)`` arrays; the gradients in
    closed form need about a third of them. Notation: ``u = log(mu / theta)``, ``s = softplus(u)``,
    ``a = -theta s`` (log-probability of a zero count under the NB), ``pi`` the zero-inflation logits.
    """

    @staticmethod
    def forward(ctx, logits, log_library, log_theta, x, zi_logits):
        log_rho = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
        u = (log_rho + log_library).sub_(log_theta)
        s = F.softplus(u)
        theta = log_theta.exp().expand_as(u)
        a = -theta * s
        index = x.reshape(-1).nonzero().squeeze(1)
        rows = torch.div(index, x.shape[-1], rounding_mode="floor")
        counts = x.reshape(-1).index_select(0, index)
        theta_at = theta.reshape(-1).index_select(0, index)
        positive = counts * (u.reshape(-1).index_select(0, index) - s.reshape(-1).index_select(0, index))
        positive += torch.lgamma(counts + theta_at) - torch.lgamma(theta_at) - torch.lgamma(counts + 1)
        if zi_logits is None:
            dense = a.sum(-1)
            zero_case = None
        else:
            zero_case = torch.logaddexp(zi_logits, a)
            dense = zero_case.sum(-1) - F.softplus(zi_logits).sum(-1)
            # a positive count has log(1 - p_zi) + a + x (u - s) + lgamma terms instead of the zero case
            positive += (a - zero_case).reshape(-1).index_select(0, index)
        ctx.save_for_backward(log_rho, u, s, a, theta, zi_logits, zero_case, index, rows, counts, theta_at)
        ctx.log_theta_shape = log_theta.shape
        return dense + torch.zeros_like(dense).index_add_(0, rows, positive)

    @staticmethod
    def backward(ctx, grad):
        log_rho, u, s, a, theta, zi_logits, zero_case, index, rows, counts, theta_at = ctx.saved_tensors
        # d(log p)/da: 1 for the NB; for the ZINB, the posterior weight of the NB at zero counts, 1 elsewhere
        d_pi = None
        if zi_logits is None:
            d_u = -(theta * torch.exp(u - s))
            d_t = a.clone()
        else:
            d_a = torch.exp(a - zero_case)
            d_a.reshape(-1).index_fill_(0, index, 1.0)
            d_pi = torch.exp(zi_logits - zero_case)
            d_pi.reshape(-1).index_fill_(0, index, 0.0)
            d_pi -= torch.sigmoid(zi_logits)
            d_u = -(d_a * theta * torch.exp(u - s))
            d_t = d_a * a
        # positive counts: x (u - s) adds x sigmoid(-u) = x exp(-s) to d/du; the lgamma terms add theta (psi(x+theta) - psi(theta)) to d/dlog(theta)
        d_u.reshape(-1).index_add_(0, index, counts * torch.exp(-s.reshape(-1).index_select(0, index)))
        d_t -= d_u
        d_t.reshape(-1).index_add_(0, index, theta_at * (torch.digamma(counts + theta_at) - torch.digamma(theta_at)))
        g = grad.unsqueeze(-1)
        d_u *= g
        d_library = d_u.sum(-1, keepdim=True)
        d_logits = d_u.sub_(torch.exp(log_rho).mul_(d_library))
        d_t = (d_t * g).sum_to_size(ctx.log_theta_shape)
        return d_logits, d_library, d_t, None, None if d_pi is None else d_pi * g


def decoder_log_prob_sum(
    logits: torch.Tensor,
    log_library: torch.Tensor,
    log_theta: torch.Tensor,
    x: torch.Tensor,
    zi_logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-cell NB or ZINB log-likelihood of counts ``x`` from decoder outputs, lgamma terms included.

    Equals ``count_log_prob_sum(px, x)`` for ``mu = softmax(logits) * exp(log_library)`` and
    ``theta = exp(log_theta)`` (and :class:`scvi.distributions.NegativeBinomial` /
    :class:`~scvi.distributions.ZeroInflatedNegativeBinomial`'s ``log_prob`` summed over genes, up to their
    ``1e-8`` guards), with gradients in closed form: the training loss of the context and target models.

    Parameters
    ----------
    logits
        Decoder logits, ``(cells, genes)``.
    log_library
        Log library size per cell, ``(cells, 1)``.
    log_theta
        Log inverse dispersion, broadcastable to ``(cells, genes)`` (e.g. ``(genes,)``); its gradient has its shape.
    x
        Counts, ``(cells, genes)``.
    zi_logits
        Zero-inflation logits ``(cells, genes)`` (ZINB), or ``None`` (NB).

    Returns
    -------
    torch.Tensor
        ``(cells,)``.
    """
    return _DecoderLogLikelihood.apply(logits, log_library, log_theta, x, zi_logits)
