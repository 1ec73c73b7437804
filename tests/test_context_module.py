import pytest
import torch
from scvi.distributions import NegativeBinomial, ZeroInflatedNegativeBinomial

from speciesvi.module import ContextVAE
from speciesvi.module._likelihood import count_log_prob_sum, nb_log_prob_sum, zinb_log_prob_sum
from speciesvi.module._loss import decoder_log_prob_sum
from speciesvi.module._selection import candidate_log_likelihoods


def _batch(n_cells=16, n_genes=40, n_batch=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    rate = torch.rand(n_cells, n_genes, generator=generator) * 3 * (torch.rand(n_genes, generator=generator) < 0.5)
    x = torch.poisson(rate, generator=generator)
    batch_index = torch.randint(0, n_batch, (n_cells, 1), generator=generator)
    return x, batch_index


def _scvi_distribution(logits, log_library, log_theta, zi_logits=None):
    """scvi-tools' NB (``zi_logits=None``) or ZINB for decoder outputs: the reference of the likelihood tests."""
    mu = torch.softmax(logits, -1) * log_library.exp()
    theta = log_theta.exp().expand_as(mu)
    if zi_logits is None:
        return NegativeBinomial(mu=mu, theta=theta)
    return ZeroInflatedNegativeBinomial(mu=mu, theta=theta, zi_logits=zi_logits)


@pytest.mark.parametrize("dispersion", ["gene", "gene-batch", "gene-cell"])
@pytest.mark.parametrize("gene_likelihood", ["zinb", "nb"])
def test_module_parts_have_the_documented_shapes(dispersion, gene_likelihood):
    x, batch_index = _batch()
    module = ContextVAE(40, n_batch=2, n_latent=5, dispersion=dispersion, gene_likelihood=gene_likelihood)
    inter = module.outer(x, batch_index)
    assert inter.shape == (16, 300)
    mean, std = module.z_posterior(inter)
    assert mean.shape == std.shape == (16, 5) and (std > 0).all()
    lib_mean, lib_std = module.library_posterior(x, batch_index)
    assert lib_mean.shape == lib_std.shape == (16, 1)
    logits = module.expression_logits(mean, batch_index)
    assert logits.shape == (16, 40)

    inference = module.inference(x, batch_index, n_samples=3)
    assert inference["z"].shape == (3, 16, 5)
    generative = module.generative(inference["z"], inference["library"], batch_index)
    assert generative["px"].mu.shape == (3, 16, 40)
    torch.testing.assert_close(generative["px"].scale.sum(-1), torch.ones(3, 16))


def test_loss_is_finite_and_weights_the_kl_term():
    x, batch_index = _batch()
    module = ContextVAE(40, n_batch=2, n_latent=5)
    tensors = {"X": x, "batch": batch_index}
    torch.manual_seed(0)
    inference, generative, low = module(tensors, loss_kwargs={"kl_weight": 0.1})
    high = module.loss(tensors, inference, generative, kl_weight=1.0)
    assert torch.isfinite(low.loss)
    kl_z = low.kl_local["kl_divergence_z"].mean()
    torch.testing.assert_close(high.loss - low.loss, 0.9 * kl_z, rtol=1e-4, atol=1e-3)


def test_sparse_aware_likelihoods_match_scvi_distributions():
    x, _ = _batch(n_cells=9, n_genes=60, seed=3)
    generator = torch.Generator().manual_seed(1)
    mu = torch.rand(9, 60, generator=generator) * 4 + 0.01
    theta = torch.rand(60, generator=generator) * 5 + 0.1
    zi_logits = torch.randn(9, 60, generator=generator)
    expected_nb = NegativeBinomial(mu=mu, theta=theta.expand_as(mu)).log_prob(x).sum(-1)
    expected_zinb = ZeroInflatedNegativeBinomial(mu=mu, theta=theta.expand_as(mu), zi_logits=zi_logits).log_prob(x)
    torch.testing.assert_close(nb_log_prob_sum(x, mu, theta), expected_nb, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(zinb_log_prob_sum(x, mu, theta, zi_logits), expected_zinb.sum(-1), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("zero_inflated", [False, True])
@pytest.mark.parametrize("per_candidate_theta", [False, True])
def test_candidate_likelihoods_match_scvi_distributions_without_count_terms(zero_inflated, per_candidate_theta):
    """The candidate-selection likelihood (logits - log theta in, shared terms out) against scvi-tools' distributions."""
    x, _ = _batch(n_cells=6, n_genes=50, seed=4)
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(6, 3, 50, generator=generator) * 2  # 3 candidate means per cell
    log_library = torch.randn(6, 1, generator=generator) + 5
    log_theta = (
        torch.randn(6, 3, 50, generator=generator) if per_candidate_theta else torch.randn(6, 50, generator=generator)
    )
    zi_logits = torch.randn(6, 3, 50, generator=generator) if zero_inflated else None
    log_theta_3d = log_theta if per_candidate_theta else log_theta.unsqueeze(1)
    px = _scvi_distribution(logits, log_library.unsqueeze(1), log_theta_3d, zi_logits)
    counts = x.unsqueeze(1).expand_as(px.mu)
    theta = px.theta
    # left out: terms that are the same for all candidates of a cell
    shared_terms = -torch.lgamma(counts + 1).sum(-1)
    if not per_candidate_theta:
        shared_terms = shared_terms + (torch.lgamma(counts + theta) - torch.lgamma(theta)).sum(-1)
    expected = px.log_prob(counts).sum(-1) - shared_terms
    v = logits - log_theta_3d
    result = candidate_log_likelihoods(
        v.clone(), log_library, log_theta.exp(), x, None if zi_logits is None else zi_logits.clone()
    )
    assert result.shape == (6, 3)
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-3)
    # logits beyond float32's exp range are shifted first (softmax is shift invariant)
    shifted = candidate_log_likelihoods(
        v + 150.0, log_library, log_theta.exp(), x, None if zi_logits is None else zi_logits.clone()
    )
    torch.testing.assert_close(shifted, expected, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("zero_inflated", [False, True])
@pytest.mark.parametrize("theta_shape", ["gene", "cell-gene"])
def test_training_likelihood_matches_scvi_and_its_gradients_are_exact(zero_inflated, theta_shape):
    """The loss's closed-form backward pass against autograd's numerical check, and its value against scvi-tools."""
    x, _ = _batch(n_cells=5, n_genes=12, seed=5)
    x = x.double()
    generator = torch.Generator().manual_seed(3)

    def leaf(*shape, shift=0.0):
        return (torch.randn(*shape, generator=generator, dtype=torch.double) + shift).requires_grad_()

    logits, log_library = leaf(5, 12), leaf(5, 1, shift=3.0)
    log_theta = leaf(12) if theta_shape == "gene" else leaf(5, 12)
    zi_logits = leaf(5, 12) if zero_inflated else None
    inputs = (logits, log_library, log_theta, x, zi_logits)
    assert torch.autograd.gradcheck(decoder_log_prob_sum, inputs)

    px = _scvi_distribution(logits, log_library, log_theta, zi_logits)
    expected = px.log_prob(x).sum(-1)
    torch.testing.assert_close(decoder_log_prob_sum(*inputs), expected, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("gene_likelihood", ["zinb", "nb"])
def test_module_loss_and_its_gradients_equal_the_distribution_path(gene_likelihood):
    """The training loss (closed-form likelihood) gives the loss and gradients of scvi-tools' distributions."""
    x, batch_index = _batch(n_cells=12, n_genes=40, seed=6)
    module = ContextVAE(40, n_batch=2, n_latent=5, gene_likelihood=gene_likelihood, dropout_rate=0.0)
    tensors = {"X": x, "batch": batch_index}
    torch.manual_seed(0)
    inference, generative, fused = module(tensors)
    fused.loss.backward(retain_graph=True)
    fused_grads = [p.grad.clone() for p in module.parameters() if p.grad is not None]
    module.zero_grad()
    reference = count_log_prob_sum(generative["px"], x)
    torch.testing.assert_close(-reference, fused.reconstruction_loss["reconstruction_loss"], rtol=1e-5, atol=1e-3)
    loss = module.loss(tensors, inference, {"px": generative["px"]}).loss  # no decoder outputs: the distribution path
    loss.backward()
    reference_grads = [p.grad for p in module.parameters() if p.grad is not None]
    assert len(fused_grads) == len(reference_grads) > 10
    for got, want in zip(fused_grads, reference_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-5)


def test_invalid_architecture_options_are_refused():
    with pytest.raises(ValueError, match="dispersion"):
        ContextVAE(10, dispersion="cell")
    with pytest.raises(ValueError, match="gene_likelihood"):
        ContextVAE(10, gene_likelihood="poisson")
