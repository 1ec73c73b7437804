"""The training loss's likelihood: the NB/ZINB terms of :mod:`._likelihood` with a hand-written backward pass."""

from __future__ import annotations

import torch

from ._likelihood import NonZero, nonzero_gain, ratio_sigmoid, row_sums_at, zero_slope, zero_terms, zero_weight


class _DecoderLogLikelihood(torch.autograd.Function):
    """Per-cell NB/ZINB log-likelihood from decoder outputs, with a hand-written backward pass.

    Autograd through softmax, ``mu = rho * l``, the distribution's ``log_prob`` and the gathers at the
    non-zero counts records some forty passes over the ``(cells, genes)`` arrays; the gradients in
    closed form need about a third of them. Notation as in :mod:`._likelihood`: ``u = log(mu / theta)``,
    ``s = softplus(u)``, ``a = -theta s``, ``pi`` the zero-inflation logits.
    """

    @staticmethod
    def forward(ctx, logits, log_library, log_theta, x, zi_logits):
        log_rho = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
        u = (log_rho + log_library).sub_(log_theta)
        theta = log_theta.exp().expand_as(u)
        terms = zero_terms(u, theta, zi_logits)
        nonzero = NonZero.of(x)
        theta_at = nonzero.take(theta)
        zinb = zi_logits is not None
        gain = nonzero_gain(
            nonzero.counts,
            nonzero.take(u),
            nonzero.take(terms.s),
            theta_at,
            nonzero.take(terms.a) if zinb else None,
            nonzero.take(zi_logits) if zinb else None,
        )
        ctx.save_for_backward(
            log_rho, u, terms.s, terms.a, theta, zi_logits, terms.mixture, nonzero.index, nonzero.counts, theta_at
        )
        ctx.log_theta_shape = log_theta.shape
        return terms.value.sum(-1) + row_sums_at(gain, nonzero.rows, nonzero.n_rows).reshape(u.shape[:-1])

    @staticmethod
    def backward(ctx, grad):
        log_rho, u, s, a, theta, zi_logits, mixture, index, counts, theta_at = ctx.saved_tensors
        # d(log p)/da: 1 for the NB; for the ZINB, the posterior weight of the NB at zero counts, 1 elsewhere
        d_pi = None
        if zi_logits is None:
            d_u = zero_slope(theta, ratio_sigmoid(u, s))
            d_t = a.clone()
        else:
            d_a = zero_weight(a, mixture)
            d_a.reshape(-1).index_fill_(0, index, 1.0)
            d_pi = torch.exp(zi_logits - mixture)
            d_pi.reshape(-1).index_fill_(0, index, 0.0)
            d_pi -= torch.sigmoid(zi_logits)
            d_u = zero_slope(theta, ratio_sigmoid(u, s), d_a)
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

    Equals :func:`~speciesvi.module._likelihood.count_log_prob_sum` for ``mu = softmax(logits) * exp(log_library)``
    and ``theta = exp(log_theta)`` (and :class:`scvi.distributions.NegativeBinomial` /
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

    Examples
    --------
    >>> logits, x = torch.zeros(2, 3), torch.tensor([[0.0, 1, 2], [3, 0, 0]])
    >>> decoder_log_prob_sum(logits, torch.ones(2, 1), torch.zeros(3), x).shape
    torch.Size([2])
    """
    return _DecoderLogLikelihood.apply(logits, log_library, log_theta, x, zi_logits)
