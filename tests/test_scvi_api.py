"""speciesvi models honour the scvi-tools API they inherit: training-plan settings and latent posteriors."""

import numpy as np
import pandas as pd
import pytest
import scvi

import speciesvi

N_GENES, N_SHARED = 60, 50

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _species(prefix: str, seed: int):
    scvi.settings.seed = seed
    adata = scvi.data.synthetic_iid(batch_size=60, n_genes=N_GENES, n_batches=2, n_labels=3)
    adata.var_names = [f"{prefix}{i}" for i in range(N_GENES)]
    adata.obs["labels"] = adata.obs["labels"].astype(str)
    return adata


def _two_species():
    context, target = _species("ctx_", 1), _species("TGT_", 2)
    table = pd.DataFrame(
        {
            "target_gene": [f"TGT_{i}" for i in range(N_SHARED)],
            "context_gene": [f"ctx_{i}" for i in range(N_SHARED)],
            "homology_type": "one2one",
        }
    )
    speciesvi.pp.translate_genes(target, table)
    speciesvi.pp.homolog_neighbors(target, context, labels_key="labels", n_neighbors=20, n_vote=10)
    speciesvi.ContextVI.setup_anndata(context, batch_key="batch", labels_key="labels")
    speciesvi.TargetVI.setup_anndata(target, batch_key="batch")
    return context, target


TRAIN = {"batch_size": 64, "train_size": 1.0, "enable_progress_bar": False}


def _context_model(context):
    return speciesvi.ContextVI(context, n_latent=4, n_hidden_outer=(32,), n_hidden_inner=(16,), n_hidden_decoder=(32,))


@pytest.fixture(scope="module")
def trained():
    """A briefly trained ContextVI and a TargetVI aligned to it (tiny synthetic species)."""
    context, target = _two_species()
    context_model = _context_model(context)
    context_model.train(max_epochs=1, **TRAIN)
    target_model = speciesvi.TargetVI(target, context_model, n_candidates=10, n_hidden_decoder=(32,))
    target_model.train(max_epochs=1, **TRAIN)
    return {"ContextVI": context_model, "TargetVI": target_model}


def _history(model, key):
    return model.history[key][key].to_numpy(dtype=float)


# -- training-plan settings --------------------------------------------------------------------------
def test_plan_config_wins_over_the_speciesvi_defaults():
    """``plan_config`` (scvi-tools' way of passing training-plan settings) is the user's choice: it wins."""
    context, target = _two_species()
    context_model = _context_model(context)
    context_model.train(max_epochs=3, plan_config={"n_epochs_kl_warmup": 2, "min_kl_weight": 0.5}, **TRAIN)
    np.testing.assert_allclose(_history(context_model, "kl_weight"), [0.5, 0.75, 1.0])

    # plan_kwargs still win over plan_config (as in scvi-tools), and the defaults fill what neither sets
    context_model = _context_model(context)
    context_model.train(
        max_epochs=2,
        plan_config={"n_epochs_kl_warmup": 2, "min_kl_weight": 0.5},
        plan_kwargs={"min_kl_weight": 0.0},
        **TRAIN,
    )
    np.testing.assert_allclose(_history(context_model, "kl_weight"), [0.0, 0.5])
    context_model = _context_model(context)
    context_model.train(max_epochs=2, **TRAIN)
    np.testing.assert_allclose(_history(context_model, "kl_weight"), [0.1, 0.19])  # 0.1 -> 1 over 10 epochs

    target_model = speciesvi.TargetVI(target, context_model, n_candidates=10, n_hidden_decoder=(32,))
    target_model.train(
        max_epochs=2,
        plan_config={"eta_start": 0.0, "eta_max": 0.0, "n_epochs_kl_warmup": 1, "min_kl_weight": 0.5},
        **TRAIN,
    )
    np.testing.assert_allclose(_history(target_model, "eta"), [0.0, 0.0])
    np.testing.assert_allclose(_history(target_model, "kl_weight"), [0.5, 1.0])
    target_model.train(max_epochs=2, plan_config={"eta_max": 13.0}, **TRAIN)
    # eta_start and the warm-up length are speciesvi's defaults (the history goes on across train calls)
    np.testing.assert_allclose(_history(target_model, "eta")[-2:], [10.0, 10.3])


# -- latent posteriors -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ContextVI", "TargetVI"])
def test_return_dist_and_dataloader_follow_scvi_tools(trained, name):
    model = trained[name]
    mean = model.get_latent_representation()
    dist_mean, dist_var = model.get_latent_representation(return_dist=True)
    np.testing.assert_allclose(dist_mean, mean, rtol=1e-6)
    np.testing.assert_allclose(dist_var, model.get_latent_representation(representation="z_std") ** 2, rtol=1e-5)
    assert (dist_var > 0).all()

    indices = np.arange(0, model.adata.n_obs, 3)
    loader = model._make_data_loader(adata=model.adata, indices=indices, batch_size=17)
    np.testing.assert_allclose(model.get_latent_representation(dataloader=loader), mean[indices], rtol=1e-6)
    np.testing.assert_allclose(
        model.get_latent_representation(indices=indices, batch_size=17), mean[indices], rtol=1e-6
    )
    with pytest.raises(ValueError, match="Only one of"):
        model.get_latent_representation(adata=model.adata, dataloader=loader)
    with pytest.raises(ValueError, match="return_dist"):
        model.get_latent_representation(representation="inter", return_dist=True)


@pytest.mark.parametrize("name", ["ContextVI", "TargetVI"])
def test_aggregated_posterior_and_differential_abundance(trained, name):
    model = trained[name]
    indices = np.arange(10)
    posterior = model.get_aggregated_posterior(indices=indices)
    mean = model.get_latent_representation(indices=indices)
    np.testing.assert_allclose(posterior.component_distribution.base_dist.loc.numpy(), mean, rtol=1e-6)
    assert posterior.batch_shape == () and posterior.event_shape == (4,)
    assert np.isfinite(posterior.log_prob(posterior.component_distribution.base_dist.loc).numpy()).all()

    adata = model.adata
    model.differential_abundance(adata, sample_key="batch", batch_size=64)
    log_probs = adata.obsm["da_log_probs"]
    assert log_probs.shape == (adata.n_obs, 2) and np.isfinite(log_probs.to_numpy()).all()
    del adata.obsm["da_log_probs"]
