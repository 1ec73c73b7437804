"""The similarity kernel (module level) and TargetVI.similarity / transfer_labels_cell / cell_type_similarity."""

import numpy as np
import pandas as pd
import pytest
import scvi
import torch
from anndata import AnnData
from scipy import sparse

import speciesvi
from speciesvi.module import ExpressionDecoder
from speciesvi.module._similarity import (
    CountsCSR,
    candidate_log_likelihood,
    profile_log_likelihood,
    reference_log_likelihood,
)

N_GENES, N_SHARED = 100, 80
#: Marker genes of every synthetic cell type; "novel" exists in the target species only.
PROGRAMS = {"alpha": range(0, 12), "beta": range(12, 24), "gamma": range(24, 36), "novel": range(60, 80)}
BACKENDS = ["torch", "numba"]


def structured_species(prefix: str, seed: int, types: list[str], n_per_type: int = 60) -> AnnData:
    """Counts of a synthetic species: shared biology (marker programs), a species shift, two batches."""
    base = np.random.default_rng(0).gamma(2.0, 1.0, N_GENES)  # the same biology in both species
    rng = np.random.default_rng(seed)
    shift = np.exp(rng.normal(0.0, 0.2, N_GENES))
    blocks, labels, batches = [], [], []
    for cell_type in types:
        profile = base * shift
        profile[list(PROGRAMS[cell_type])] *= 20.0
        for batch in range(2):
            effect = profile * np.exp(rng.normal(0.0, 0.1, N_GENES))
            library = np.exp(rng.normal(7.0, 0.4, n_per_type // 2))
            mu = library[:, None] * effect / effect.sum()
            blocks.append(rng.poisson(rng.gamma(5.0, mu / 5.0)))
            labels += [cell_type] * (n_per_type // 2)
            batches += [f"batch_{batch}"] * (n_per_type // 2)
    adata = AnnData(sparse.csr_matrix(np.vstack(blocks).astype(np.float32)))
    adata.var_names = [f"{prefix}{i}" for i in range(N_GENES)]
    adata.obs_names = [f"{prefix}cell{i}" for i in range(adata.n_obs)]
    adata.obs["labels"] = pd.Categorical(labels)
    adata.obs["batch"] = pd.Categorical(batches)
    return adata


def prepare_species(context_types=("alpha", "beta", "gamma"), target_types=("alpha", "beta", "gamma", "novel")):
    context = structured_species("ctx_", 1, list(context_types))
    target = structured_species("TGT_", 2, list(target_types))
    table = pd.DataFrame(
        {
            "target_gene": [f"TGT_{i}" for i in range(N_SHARED)],
            "context_gene": [f"ctx_{i}" for i in range(N_SHARED)],
            "homology_type": "one2one",
        }
    )
    speciesvi.pp.translate_genes(target, table)
    speciesvi.pp.homolog_neighbors(target, context, labels_key="labels", n_neighbors=40, n_vote=10)
    speciesvi.ContextVI.setup_anndata(context, batch_key="batch", labels_key="labels")
    speciesvi.TargetVI.setup_anndata(target, batch_key="batch")
    return context, target


def train_pair(context, target, epochs: int = 10, batch_size: int = 16):
    """Small models; 10 epochs in minibatches of 16 let the alignment map every type onto its context type."""
    scvi.settings.seed = 0
    kwargs = {"max_epochs": epochs, "batch_size": batch_size, "train_size": 1.0, "enable_progress_bar": False}
    context_model = speciesvi.ContextVI(context, n_latent=5, n_hidden_outer=(64,), n_hidden_inner=(32,))
    context_model.train(**kwargs)
    model = speciesvi.TargetVI(target, context_model, n_candidates=10)
    model.train(**kwargs)
    return model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained_pair():
    """A briefly trained TargetVI on structured synthetic species (the tests here do not need a good alignment)."""
    scvi.settings.seed = 0
    context, target = prepare_species()
    return train_pair(context, target, epochs=2, batch_size=128)


# -- the kernel --------------------------------------------------------------------------------------
def _kernel_inputs(gene_likelihood: str, dispersion: str, n_cells: int = 40, n_genes: int = 200):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    decoder = ExpressionDecoder(4, n_genes, 3, dims=(16,), dispersion=dispersion, gene_likelihood=gene_likelihood)
    log_library = rng.uniform(5.0, 9.5, n_cells)  # a realistic range of library sizes
    expression = np.exp(rng.normal(0.0, 1.5, (n_cells, n_genes)))
    x = rng.poisson(expression / expression.sum(1, keepdims=True) * np.exp(log_library)[:, None]).astype(np.float32)
    return {
        "decoder": decoder,
        "z": torch.randn(30, 4),
        "candidates": torch.as_tensor(rng.integers(0, 30, (n_cells, 6))),
        "x": x,
        "batch": torch.as_tensor(rng.integers(0, 3, n_cells)),
        "log_library": torch.as_tensor(np.log(x.sum(1) + 1.0), dtype=torch.float32),
    }


def _reference(inputs) -> torch.Tensor:
    columns = [
        reference_log_likelihood(
            inputs["decoder"],
            inputs["z"][inputs["candidates"][:, c]],
            torch.as_tensor(inputs["x"]),
            inputs["batch"],
            inputs["log_library"],
        )
        for c in range(inputs["candidates"].shape[1])
    ]
    return torch.stack(columns, 1).double()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dispersion", ["gene", "gene-batch", "gene-cell"])
@pytest.mark.parametrize("gene_likelihood", ["zinb", "nb"])
def test_kernel_equals_the_dense_likelihood(gene_likelihood, dispersion, backend):
    inputs = _kernel_inputs(gene_likelihood, dispersion)
    expected = _reference(inputs)
    counts = CountsCSR.from_scipy(sparse.csr_matrix(inputs["x"]))
    args = (inputs["decoder"], inputs["z"], inputs["candidates"], counts, inputs["batch"], inputs["log_library"])
    exact = candidate_log_likelihood(*args, dense="exact", backend=backend)
    torch.testing.assert_close(exact, expected, atol=5e-3, rtol=1e-6)
    grid = candidate_log_likelihood(*args, dense="grid", n_grid=8, backend=backend)
    spread = (expected.amax(1) - expected.amin(1)).median()
    error = (grid - expected).abs().max()
    assert error < 0.05 and error < 1e-3 * spread
    # the decoder's mode is restored
    assert inputs["decoder"].training


def test_kernel_results_do_not_depend_on_chunking_or_backend():
    inputs = _kernel_inputs("zinb", "gene-batch")
    counts = CountsCSR.from_scipy(inputs["x"])
    args = (inputs["decoder"], inputs["z"], inputs["candidates"], counts, inputs["batch"], inputs["log_library"])
    # one candidate per chunk and a few pairs per sparse batch exercise every chunking path
    one = candidate_log_likelihood(*args, backend="torch", chunk_size=3, max_elements=500)
    many = candidate_log_likelihood(*args, backend="torch")
    torch.testing.assert_close(one, many, atol=1e-3, rtol=1e-6)
    torch.testing.assert_close(candidate_log_likelihood(*args, backend="numba"), many, atol=2e-3, rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_profile_log_likelihood_equals_the_dense_sum(backend):
    rng = np.random.default_rng(1)
    x = rng.poisson(2.0, (25, 30)) * rng.binomial(1, 0.3, (25, 30))
    profiles = torch.log_softmax(torch.randn(12, 30), dim=-1)
    candidates = torch.as_tensor(rng.integers(0, 12, (25, 4)))
    result = profile_log_likelihood(
        lambda codes: profiles[codes], candidates, CountsCSR.from_scipy(x), 12, backend=backend, chunk_size=5
    )
    expected = (torch.as_tensor(x, dtype=torch.float32)[:, None, :] * profiles[candidates]).sum(-1).double()
    torch.testing.assert_close(result, expected, atol=1e-4, rtol=1e-6)


def test_kernel_rejects_bad_inputs():
    inputs = _kernel_inputs("nb", "gene")
    counts = CountsCSR.from_scipy(inputs["x"])
    decoder, z = inputs["decoder"], inputs["z"]
    batch, log_library = inputs["batch"], inputs["log_library"]
    with pytest.raises(ValueError, match="candidate indices"):
        candidate_log_likelihood(decoder, z, inputs["candidates"] + 100, counts, batch, log_library)
    with pytest.raises(ValueError, match="cells"):
        candidate_log_likelihood(decoder, z, inputs["candidates"][:5], counts, batch, log_library)
    with pytest.raises(ValueError, match="genes"):
        candidate_log_likelihood(
            decoder, z, inputs["candidates"], CountsCSR.from_scipy(inputs["x"][:, :10]), batch, log_library
        )
    with pytest.raises(ValueError, match="dense"):
        candidate_log_likelihood(decoder, z, inputs["candidates"], counts, batch, log_library, dense="fast")
    with pytest.raises(ValueError, match="n_grid"):
        candidate_log_likelihood(decoder, z, inputs["candidates"], counts, batch, log_library, n_grid=1)
    with pytest.raises(ValueError, match="backend"):
        candidate_log_likelihood(decoder, z, inputs["candidates"], counts, batch, log_library, backend="cuda")


# -- the model methods -------------------------------------------------------------------------------
def test_similarity_is_the_likelihood_difference_to_the_own_latent(trained_pair):
    model = trained_pair
    cells = np.array([0, 17, 101, 230])
    candidates = np.array([[0, 5, 9], [3, 3, 150], [100, 2, 7], [1, 179, 60]])
    sims, order = model.similarity(indices=cells, candidates=candidates)
    assert sims.dtype == np.float32 and sims.shape == (4, 3) and order.dtype == np.int64
    assert (np.diff(sims, axis=1) >= 0).all()
    np.testing.assert_array_equal(np.sort(order, 1), np.sort(candidates, 1))

    decoder = model.module.decoder
    z = torch.as_tensor(model.get_latent_representation(indices=cells))
    log_library = torch.as_tensor(model.get_latent_representation(indices=cells, representation="library")[:, 0])
    x = torch.as_tensor(model.adata.X[cells].toarray())
    batch = torch.as_tensor(model.adata_manager.get_from_registry("batch")[cells].reshape(-1))
    context_z = model.module.context_z_mean
    own = reference_log_likelihood(decoder, z, x, batch, log_library)
    for i in range(len(cells)):
        expected = own[i] - reference_log_likelihood(
            decoder, context_z[order[i]], x[[i] * 3], batch[[i] * 3], log_library[[i] * 3]
        )
        np.testing.assert_allclose(sims[i], expected.numpy(), atol=5e-3)


def test_default_candidates_are_the_nearest_context_cells_in_the_latent_space(trained_pair):
    model = trained_pair
    sims, order = model.similarity(indices=np.arange(10), n_candidates=30)
    assert sims.shape == order.shape == (10, 30)
    z = model.get_latent_representation(indices=np.arange(10))
    distances = ((z[:, None, :] - model.module.context_z_mean.numpy()[None]) ** 2).sum(-1)
    nearest = np.argsort(distances, axis=1)[:, :30]
    np.testing.assert_array_equal(np.sort(order, 1), np.sort(nearest, 1))
    with pytest.raises(ValueError, match="n_candidates"):
        model.similarity(n_candidates=10_000)
    with pytest.raises(ValueError, match="Target cell indices"):
        model.similarity(indices=[model.adata.n_obs])


def test_transfer_labels_cell_ranks_every_context_cell(trained_pair):
    model = trained_pair
    ranking = model.transfer_labels_cell(5)
    n_context = model.context_model.adata.n_obs
    assert len(ranking) == n_context and set(ranking["context_index"]) == set(range(n_context))
    assert ranking["similarity"].is_monotonic_increasing
    assert list(ranking.columns) == ["labels", "context_index", "similarity"]
    assert (ranking.index == model.context_model.adata.obs_names[ranking["context_index"]]).all()
    sims, order = model.similarity(indices=[5], candidates=ranking["context_index"].to_numpy()[:20][None])
    np.testing.assert_allclose(sims[0], ranking["similarity"].to_numpy()[:20], atol=1e-3)
    assert model.transfer_labels_cell(-1).shape == ranking.shape
    for bad in (model.adata.n_obs, -model.adata.n_obs - 1, 2.5):
        with pytest.raises(ValueError, match="index"):
            model.transfer_labels_cell(bad)
    with pytest.raises(ValueError, match="no obs column"):
        model.transfer_labels_cell(0, labels_key="cell_type")
