"""The negative binomial and zero-inflated NB log-likelihood, written once.

Every count likelihood in speciesvi is assembled from the terms defined here: the training loss
(:func:`~speciesvi.module._loss.decoder_log_prob_sum` and :func:`count_log_prob_sum`), the alignment's
candidate scoring (:mod:`speciesvi.module._selection`) and the similarity kernels
(:mod:`speciesvi.module._similarity`). They equal scvi-tools'
:class:`~scvi.distributions.NegativeBinomial` and :class:`~scvi.distributions.ZeroInflatedNegativeBinomial`
``log_prob`` (tested against them).

Notation, per gene: mean ``mu``, inverse dispersion ``theta``, zero-inflation logits ``pi`` (ZINB) and

* ``u = log(mu / theta)``, ``s = softplus(u) = log(1 + mu / theta)``,
* ``a = -theta s = theta (log theta - log(theta + mu))``, the NB log-probability of a zero count.

A cell's log-likelihood splits into two parts:

* a **dense** part, the log-probability of a zero count summed over all genes (:func:`zero_terms`): ``a``
  for the NB, ``logaddexp(pi, a) - softplus(pi)`` for the ZINB. With ``mu = l rho`` it depends on the cell only
  through its library size ``l``; its derivative in ``log l`` (that is, in ``u``) is
  ``-w theta sigmoid(u)`` (:func:`zero_slope`), with ``w = 1`` for the NB and ``sigmoid(a - pi)`` for the ZINB;
* a **sparse** part over the non-zero counts only, ``log p(x) - log p(0)`` (:func:`nonzero_gain`):
  ``x (u - s) + lgamma(x + theta) - lgamma(theta) - lgamma(x + 1)``, less ``softplus(pi - a)`` for the ZINB.

Single-cell counts are mostly zeros, so the ``lgamma`` terms, evaluated on the non-zero counts only, cost
little. Callers that compare the likelihood of one cell's counts under several means leave out the terms
that do not depend on the mean (``count_terms=False``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, TypeVar

import torch
import torch.nn.functional as F
from scvi.distributions import NegativeBinomial, ZeroInflatedNegativeBinomial

#: Guard of the logarithms of means and dispersions given directly (scvi-tools' ``eps``).
EPS = 1e-8


# -- the terms, element by element ------------------------------------------------------------------
# Plain arithmetic on tensors or on numbers, with the transcendental functions as arguments (torch's by
# default): torch evaluates them on whole arrays, and the numba kernels (:mod:`._kernel_numba`) compile these
# same functions for single numbers with their own softplus and logaddexp. numba's on-disk cache of those
# kernels is keyed on _kernel_numba.py alone: after editing a function here, touch that file (the tests
# compare both backends with scvi-tools and would show a stale cache).
Number = TypeVar("Number", torch.Tensor, float)


def nb_zero(theta: Number, s: Number) -> Number:
    """NB log-probability of a zero count, ``a = -theta s``, from ``s = log(1 + mu / theta)``."""
    return -theta * s


def zinb_mixture(a: Number, zi_logits: Number, logaddexp: Callable = torch.logaddexp) -> Number:
    """``logaddexp(pi, a) = log(e^pi + e^a)``: the ZINB's zero-count log-probability plus ``softplus(pi)``."""
    return logaddexp(zi_logits, a)


def zinb_zero(mixture: Number, zi_logits: Number, softplus: Callable = F.softplus) -> Number:
    """ZINB log-probability of a zero count, ``log(sigmoid(pi) + sigmoid(-pi) e^a)``, from :func:`zinb_mixture`."""
    return mixture - softplus(zi_logits)


def zero_weight(a: Number, mixture: Number, exp: Callable = torch.exp) -> Number:
    """``d log p(0) / d a`` of the ZINB, ``sigmoid(a - pi) = exp(a - logaddexp(pi, a))`` (the NB's is 1)."""
    return exp(a - mixture)


def zero_slope(theta: Number, sigmoid_u: Number, weight: Number | None = None) -> Number:
    """``d log p(0) / d u = -w theta sigmoid(u)`` (``w`` from :func:`zero_weight`; 1 for the NB).

    ``sigmoid(u) = mu / (theta + mu)``; with ``mu = l rho`` the derivative in ``u`` is that in ``log l``.
    """
    if weight is None:
        return -(theta * sigmoid_u)
    return -(weight * theta * sigmoid_u)


def nb_gain(x: Number, u: Number, s: Number) -> Number:
    """``x (u - s) = x log(mu / (theta + mu))``: the NB's ``log p(x) - log p(0)`` without the count terms."""
    return x * (u - s)


def zinb_gain(a: Number, zi_logits: Number, softplus: Callable = F.softplus) -> Number:
    """What zero inflation adds to ``log p(x) - log p(0)`` at a non-zero count: ``-softplus(pi - a)``.

    That is ``log(1 - p_zi) + a - log p(0)``, with ``log p(0)`` the ZINB's.
    """
    return -softplus(zi_logits - a)


def dispersion_terms(x: Number, theta: Number, lgamma: Callable = torch.lgamma) -> Number:
    """``lgamma(x + theta) - lgamma(theta)``, the part of the count terms that depends on the dispersion."""
    return lgamma(x + theta) - lgamma(theta)


def count_terms(x: Number, theta: Number, lgamma: Callable = torch.lgamma) -> Number:
    """``lgamma(x + theta) - lgamma(theta) - lgamma(x + 1)``: zero where ``x == 0``, independent of the mean."""
    return dispersion_terms(x, theta, lgamma) - lgamma(x + 1)


# -- the parts, on tensors --------------------------------------------------------------------------
class ZeroTerms(NamedTuple):
    """Per-gene terms of a zero count (see the module docstring); all shaped as ``u``."""

    #: ``log(1 + mu / theta)``.
    s: torch.Tensor
    #: The NB log-probability of a zero count, ``-theta s``.
    a: torch.Tensor
    #: ``logaddexp(pi, a)`` for the ZINB, ``None`` for the NB.
    mixture: torch.Tensor | None
    #: The log-probability of a zero count: ``a`` (NB) or ``mixture - softplus(pi)`` (ZINB).
    value: torch.Tensor


def zero_terms(u: torch.Tensor, theta: torch.Tensor, zi_logits: torch.Tensor | None = None) -> ZeroTerms:
    """The dense part per gene: the log-probability of a zero count and the terms it is made of.

    Parameters
    ----------
    u
        ``log(mu / theta)``.
    theta
        Inverse dispersion, broadcastable to ``u``.
    zi_logits
        Zero-inflation logits shaped as ``u`` (ZINB), or ``None`` (NB).

    Returns
    -------
    ZeroTerms
        ``s``, ``a``, the ZINB mixture and the value.

    Examples
    --------
    >>> u, theta = torch.tensor([0.0]), torch.tensor([2.0])  # mu = theta = 2
    >>> torch.allclose(zero_terms(u, theta).value, NegativeBinomial(mu=theta, theta=theta).log_prob(torch.zeros(1)))
    True
    """
    s = F.softplus(u)
    a = nb_zero(theta, s)
    if zi_logits is None:
        return ZeroTerms(s, a, None, a)
    mixture = zinb_mixture(a, zi_logits)
    return ZeroTerms(s, a, mixture, zinb_zero(mixture, zi_logits))


#: Below this, ``exp`` and ``sigmoid`` leave the normal float32 range (and reach 0 near -103).
_UNDERFLOW = -87.0


def zinb_zero_direct(a: torch.Tensor, zi_logits: torch.Tensor, *, overwrite: bool = False) -> torch.Tensor:
    """:func:`zinb_zero` from ``a`` directly, ``log(p + (1 - p) e^a)`` with ``p = sigmoid(pi)`` (tensors only).

    One exp, one sigmoid and one log: on a CPU, softplus and logaddexp each cost about three exps, so this is
    about twice as fast where only the value is needed (the alignment's candidate scoring). Where ``p`` and
    ``e^a`` both underflow (``a`` and ``pi`` below about -103), the logaddexp form replaces the ``-inf``.
    ``overwrite`` computes ``e^a`` and ``p`` in the memory of ``a`` and ``zi_logits`` (scratch arrays of the
    caller); the result is a new array.
    """
    risky = bool(a.amin() < _UNDERFLOW) and bool(zi_logits.amin() < _UNDERFLOW)
    originals = (a.clone(), zi_logits.clone()) if risky and overwrite else (a, zi_logits)
    e = a.exp_() if overwrite else torch.exp(a)
    p = zi_logits.sigmoid_() if overwrite else torch.sigmoid(zi_logits)
    value = torch.lerp(e, torch.ones((), dtype=e.dtype, device=e.device), p).log_()
    if risky:
        underflow = torch.isneginf(value)
        if underflow.any():
            a, zi_logits = (original[underflow] for original in originals)
            value[underflow] = zinb_zero(zinb_mixture(a, zi_logits), zi_logits)
    return value


def ratio_sigmoid(u: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``sigmoid(u) = mu / (theta + mu)``, as ``exp(u - s)`` from the ``s`` at hand."""
    return torch.exp(u - s)


def zero_terms_slope(u: torch.Tensor, theta: torch.Tensor, terms: ZeroTerms) -> torch.Tensor:
    """Derivative of the zero-count log-probability in ``u`` (equivalently in ``log l`` when ``mu = l rho``)."""
    weight = None if terms.mixture is None else zero_weight(terms.a, terms.mixture)
    return zero_slope(theta, ratio_sigmoid(u, terms.s), weight)


def nonzero_gain(
    x: torch.Tensor,
    u: torch.Tensor,
    s: torch.Tensor,
    theta: torch.Tensor | None = None,
    a: torch.Tensor | None = None,
    zi_logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """The sparse part per non-zero count, ``log p(x) - log p(0)``, all arguments taken at those counts.

    Parameters
    ----------
    x
        The non-zero counts.
    u, s
        ``log(mu / theta)`` and ``softplus(u)`` there.
    theta
        Inverse dispersion there for the count terms ``lgamma(x + theta) - lgamma(theta) - lgamma(x + 1)``;
        ``None`` leaves them out.
    a
        ``-theta s`` there (ZINB only).
    zi_logits
        Zero-inflation logits there (ZINB), or ``None`` (NB).

    Returns
    -------
    torch.Tensor
        Shaped as ``x``.
    """
    gain = nb_gain(x, u, s)
    if theta is not None:
        gain = gain + count_terms(x, theta)
    if zi_logits is not None:
        gain = gain + zinb_gain(a, zi_logits)
    return gain


def row_sums_at(values: torch.Tensor, rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """Per-row sums of ``values`` that belong to rows ``rows``."""
    return torch.zeros(n_rows, dtype=values.dtype, device=values.device).index_add_(0, rows, values)


class NonZero(NamedTuple):
    """The non-zero counts of a ``(..., genes)`` array, flattened: positions, rows and values."""

    index: torch.Tensor
    rows: torch.Tensor
    counts: torch.Tensor
    n_rows: int

    @classmethod
    def of(cls, x: torch.Tensor) -> NonZero:
        """Locate the non-zero counts of ``x``."""
        flat = x.reshape(-1)
        index = flat.nonzero().squeeze(1)
        rows = torch.div(index, x.shape[-1], rounding_mode="floor")
        return cls(index, rows, flat.index_select(0, index), flat.numel() // max(x.shape[-1], 1))

    def take(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` (shaped as the counts' array) at the non-zero counts."""
        return values.reshape(-1).index_select(0, self.index)


def log_prob_sum(
    x: torch.Tensor,
    u: torch.Tensor,
    theta: torch.Tensor,
    zi_logits: torch.Tensor | None = None,
    *,
    count_terms: bool = True,
    nonzero: NonZero | None = None,
    terms: ZeroTerms | None = None,
) -> torch.Tensor:
    """Sum over genes (the last axis) of the NB or ZINB log-probability of counts ``x``: dense plus sparse part.

    Parameters
    ----------
    x
        Counts, ``(..., genes)``.
    u
        ``log(mu / theta)``, shaped as ``x``.
    theta
        Inverse dispersion, broadcastable to ``x``.
    zi_logits
        Zero-inflation logits shaped as ``x`` (ZINB), or ``None`` (NB).
    count_terms
        Include ``lgamma(x + theta) - lgamma(theta) - lgamma(x + 1)``; leave them out to compare the likelihood
        of the same counts under different means.
    nonzero, terms
        The non-zero counts of ``x`` and the zero terms, when the caller has them already.

    Returns
    -------
    torch.Tensor
        ``x.shape[:-1]``.
    """
    theta = theta.expand_as(u)
    nonzero = NonZero.of(x) if nonzero is None else nonzero
    terms = zero_terms(u, theta, zi_logits) if terms is None else terms
    take = nonzero.take
    gain = nonzero_gain(
        nonzero.counts,
        take(u),
        take(terms.s),
        take(theta) if count_terms else None,
        None if zi_logits is None else take(terms.a),
        None if zi_logits is None else take(zi_logits),
    )
    dense = terms.value.sum(-1)
    return dense + row_sums_at(gain, nonzero.rows, nonzero.n_rows).reshape(dense.shape)


def _log_ratio(mu: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """``u = log(mu / theta)`` of means and dispersions given directly (guarded as scvi-tools guards them)."""
    return torch.log(mu + EPS) - torch.log(theta + EPS)


def nb_log_prob_sum(
    x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, *, count_terms: bool = True
) -> torch.Tensor:
    """Sum over genes of the negative binomial log-probability of counts ``x`` (mean ``mu``, inverse dispersion ``theta``).

    ``count_terms=False`` leaves out ``lgamma(x + theta) - lgamma(theta) - lgamma(x + 1)``, which does not
    depend on ``mu``: enough to compare the likelihood of the same counts under different means.
    """
    theta = theta.expand_as(mu)
    return log_prob_sum(x, _log_ratio(mu, theta), theta, count_terms=count_terms)


def zinb_log_prob_sum(
    x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, zi_logits: torch.Tensor, *, count_terms: bool = True
) -> torch.Tensor:
    """Sum over genes of the zero-inflated negative binomial log-probability (scvi-tools' parameterisation).

    ``count_terms`` as in :func:`nb_log_prob_sum`.
    """
    theta = theta.expand_as(mu)
    return log_prob_sum(x, _log_ratio(mu, theta), theta, zi_logits, count_terms=count_terms)


def count_log_prob_sum(
    px: NegativeBinomial | ZeroInflatedNegativeBinomial, x: torch.Tensor, *, count_terms: bool = True
) -> torch.Tensor:
    """Per-cell log-likelihood of counts ``x`` under an scvi-tools NB or ZINB distribution ``px``."""
    if isinstance(px, ZeroInflatedNegativeBinomial):
        return zinb_log_prob_sum(x, px.mu, px.theta, px.zi_logits, count_terms=count_terms)
    if isinstance(px, NegativeBinomial):
        return nb_log_prob_sum(x, px.mu, px.theta, count_terms=count_terms)
    return px.log_prob(x).sum(-1)
