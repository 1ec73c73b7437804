"""The NB/ZINB likelihood core (module/_likelihood.py) on hard inputs, against scipy and scvi-tools."""

import numpy as np
import pytest
import torch
from scipy import stats
from scvi.distributions import NegativeBinomial, ZeroInflatedNegativeBinomial

from speciesvi.module._likelihood import (
    count_log_prob_sum,
    log_prob_sum,
    nonzero_gain,
    zero_terms,
    zero_terms_slope,
    zinb_mixture,
    zinb_zero,
    zinb_zero_direct,
)


def _hard_inputs(dtype=torch.float64, n_cells=40, n_genes=200, seed=0):
    """Zeros, large counts, tiny and huge dispersions, extreme zero-inflation logits."""
    rng = np.random.default_rng(seed)
    mu = np.exp(rng.uniform(-9.0, 9.0, (n_cells, n_genes)))
    theta = np.exp(rng.uniform(-9.0, 12.0, n_genes))  # 1e-4 ... e^12, the decoder's bound
    p = theta / (theta + mu)
    x = rng.negative_binomial(theta, p).astype(float)
    x[rng.random(x.shape) < 0.5] = 0.0  # mostly zeros, as in single-cell data
    x[0, :20] = 50_000.0  # large counts, also where the mean is small
    x[1] = 0.0  # an empty cell
    zi_logits = rng.normal(0.0, 3.0, (n_cells, n_genes))
    zi_logits[2], zi_logits[3], zi_logits[4, ::2] = 60.0, -60.0, 25.0  # extreme zero inflation either way
    return tuple(torch.as_tensor(a, dtype=dtype) for a in (x, mu, theta, zi_logits))


def _scipy_log_prob(x, mu, theta, zi_logits=None) -> np.ndarray:
    """Per-gene reference log-probabilities in float64 from scipy's negative binomial."""
    x, mu, theta = x.numpy(), mu.numpy(), np.broadcast_to(theta.numpy(), mu.shape)
    log_nb = stats.nbinom.logpmf(x, theta, theta / (theta + mu))
    if zi_logits is None:
        return log_nb
    pi = zi_logits.numpy()
    log_zi, log_keep = -np.logaddexp(0.0, -pi), -np.logaddexp(0.0, pi)  # log sigmoid(pi), log sigmoid(-pi)
    return np.where(x == 0, np.logaddexp(log_zi, log_keep + log_nb), log_keep + log_nb)


@pytest.mark.parametrize("zero_inflated", [False, True])
def test_core_equals_scipy_on_hard_inputs(zero_inflated):
    x, mu, theta, zi_logits = _hard_inputs()
    pi = zi_logits if zero_inflated else None
    expected = _scipy_log_prob(x, mu, theta, pi)
    u = torch.log(mu) - torch.log(theta)
    # per gene: dense (zero-count) part everywhere plus the sparse part at the non-zero counts
    terms = zero_terms(u, theta, pi)
    per_gene = terms.value + (x > 0) * nonzero_gain(x, u, terms.s, theta.expand_as(u), terms.a, pi)
    np.testing.assert_allclose(per_gene.numpy(), expected, rtol=1e-9, atol=1e-9)
    total = log_prob_sum(x, u, theta, pi)
    np.testing.assert_allclose(total.numpy(), expected.sum(-1), rtol=1e-10)
    assert torch.isfinite(total).all()


@pytest.mark.parametrize("zero_inflated", [False, True])
def test_core_float32_stays_close_to_float64(zero_inflated):
    """Without the count terms (whose float32 lgamma differences lose ~0.2 nats at theta ~ e^12, lgamma ~ 1.8e6)."""
    x, mu, theta, zi_logits = _hard_inputs()
    pi = zi_logits if zero_inflated else None
    reference = log_prob_sum(x, torch.log(mu) - torch.log(theta), theta, pi, count_terms=False)
    x32, mu32, theta32 = x.float(), mu.float(), theta.float()
    u32 = torch.log(mu32) - torch.log(theta32)
    single = log_prob_sum(x32, u32, theta32, None if pi is None else pi.float(), count_terms=False)
    assert torch.isfinite(single).all()
    # float32 rounding of u (~1e-7 relative) times counts up to ~1e5: a relative error of ~1e-5 at most
    torch.testing.assert_close(single.double(), reference, rtol=2e-5, atol=1e-2)


@pytest.mark.parametrize("zero_inflated", [False, True])
def test_core_matches_scvi_distributions(zero_inflated):
    """scvi-tools' log_prob on the same hard inputs (float64: its 1e-8 guards are the only difference)."""
    x, mu, theta, zi_logits = _hard_inputs()
    keep = theta > 1e-3  # scvi's log(theta + 1e-8) guard moves tiny dispersions by more than rounding
    x, mu, theta, zi_logits = x[:, keep], mu[:, keep], theta[keep], zi_logits[:, keep]
    theta = theta.expand_as(mu)
    if zero_inflated:
        px = ZeroInflatedNegativeBinomial(mu=mu, theta=theta, zi_logits=zi_logits)
    else:
        px = NegativeBinomial(mu=mu, theta=theta)
    expected = px.log_prob(x).sum(-1)
    torch.testing.assert_close(count_log_prob_sum(px, x), expected, rtol=1e-6, atol=1e-3)


@pytest.mark.parametrize("zero_inflated", [False, True])
def test_zero_slope_is_the_derivative_of_the_dense_part(zero_inflated):
    _, mu, theta, zi_logits = _hard_inputs(n_cells=8, n_genes=50)
    u = (torch.log(mu) - torch.log(theta)).requires_grad_()
    pi = zi_logits if zero_inflated else None
    terms = zero_terms(u, theta, pi)
    (grad,) = torch.autograd.grad(terms.value.sum(), u)
    torch.testing.assert_close(zero_terms_slope(u, theta, terms).detach(), grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("underflow", [False, True])
def test_direct_zinb_zero_equals_the_mixture_form(underflow):
    """The selection's one-exp form of the ZINB zero term, also where exp(a) and sigmoid(pi) underflow."""
    _, mu, theta, zi_logits = _hard_inputs(n_cells=20, n_genes=100)
    a = -theta * torch.nn.functional.softplus(torch.log(mu) - torch.log(theta))
    if underflow:
        a[:5], zi_logits[:5] = -120.0 - torch.rand(5, 100, dtype=a.dtype), -110.0
    expected = zinb_zero(zinb_mixture(a, zi_logits), zi_logits)  # float64
    a32, pi32 = a.float(), zi_logits.float()
    direct = zinb_zero_direct(a32, pi32)
    assert torch.isfinite(direct).all()
    torch.testing.assert_close(direct.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(zinb_zero_direct(a32.clone(), pi32.clone(), overwrite=True), direct)
