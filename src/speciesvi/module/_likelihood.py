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


def _nonzero_lgamma_sum(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Per-row sum of ``lgamma(x + theta) - lgamma(theta) - lgamma(x + 1)`` over the non-zero ``x``."""
    flat_x = x.reshape(-1)
    index = flat_x.nonzero().squeeze(1)
    counts = flat_x[index]
    dispersion = theta.reshape(-1)[index]
    terms = torch.lgamma(counts + dispersion) - torch.lgamma(dispersion) - torch.lgamma(counts + 1)
    rows = torch.div(index, x.shape[-1], rounding_mode="floor")
    out = torch.zeros(x.numel() // x.shape[-1], dtype=terms.dtype, device=x.device)
    return out.index_add(0, rows, terms).reshape(x.shape[:-1])


def nb_log_prob_sum(x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Sum over genes of the negative binomial log-probability of counts ``x`` (mean ``mu``, inverse dispersion ``theta``)."""
    theta = theta.expand_as(mu)
    log_theta_mu = torch.log(theta + mu + EPS)
    dense = theta * (torch.log(theta + EPS) - log_theta_mu) + x * (torch.log(mu + EPS) - log_theta_mu)
    return dense.sum(-1) + _nonzero_lgamma_sum(x, theta)


def zinb_log_prob_sum(x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, zi_logits: torch.Tensor) -> torch.Tensor:
    """Sum over genes of the zero-inflated negative binomial log-probability (scvi-tools' parameterisation)."""
    theta = theta.expand_as(mu)
    softplus_pi = F.softplus(-zi_logits)
    log_theta_mu = torch.log(theta + mu + EPS)
    pi_theta_log = -zi_logits + theta * (torch.log(theta + EPS) - log_theta_mu)
    is_zero = x < EPS
    case_zero = F.softplus(pi_theta_log) - softplus_pi
    case_non_zero = -softplus_pi + pi_theta_log + x * (torch.log(mu + EPS) - log_theta_mu)
    dense = torch.where(is_zero, case_zero, case_non_zero)
    return dense.sum(-1) + _nonzero_lgamma_sum(x, theta)


def count_log_prob_sum(px: NegativeBinomial | ZeroInflatedNegativeBinomial, x: torch.Tensor) -> torch.Tensor:
    """Per-cell log-likelihood of counts ``x`` under an scvi-tools NB or ZINB distribution ``px``."""
    if isinstance(px, ZeroInflatedNegativeBinomial):
        return zinb_log_prob_sum(x, px.mu, px.theta, px.zi_logits)
    if isinstance(px, NegativeBinomial):
        return nb_log_prob_sum(x, px.mu, px.theta)
    return px.log_prob(x).sum(-1)
