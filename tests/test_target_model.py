import numpy as np
import pandas as pd
import pytest
import scvi
import torch
from helpers import shared_types
from sklearn.metrics import balanced_accuracy_score
from sklearn.neighbors import KNeighborsClassifier

import speciesvi

N_GENES, N_SHARED = 100, 80


def _species(prefix: str, seed: int):
    scvi.settings.seed = seed
    adata = scvi.data.synthetic_iid(batch_size=150, n_genes=N_GENES, n_batches=2, n_labels=3)
    adata.var_names = [f"{prefix}{i}" for i in range(N_GENES)]
    adata.obs["labels"] = adata.obs["labels"].astype(str)
    return adata


@pytest.fixture
def two_species():
    """Two synthetic species whose first 80 genes are one-to-one homologs (renamed)."""
    context, target = _species("ctx_", 1), _species("TGT_", 2)
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


def _context_model(context, epochs=2):
    model = speciesvi.ContextVI(context, n_latent=5, n_hidden_outer=(64,), n_hidden_inner=(32,))
    model.train(max_epochs=epochs, enable_progress_bar=False)
    return model


def test_inter_alignment_trains_with_the_frozen_context_inner_encoder(two_species):
    context, target = two_species
    context_model = _context_model(context)
    model = speciesvi.TargetVI(target, context_model, n_candidates=10)
    model.train(max_epochs=3, enable_progress_bar=False)
    alignment = model.history["alignment_train"]["alignment_train"]
    assert (alignment > 0).all()
    eta = model.history["eta"]["eta"].to_numpy(dtype=float)
    np.testing.assert_allclose(eta, [10.0, 11.5, 13.0])
    for name, value in context_model.module.inner_encoder.state_dict().items():
        torch.testing.assert_close(model.module.inner_encoder.state_dict()[name], value)
    assert not any(p.requires_grad for p in model.module.inner_encoder.parameters())
    latent = model.get_latent_representation()
    assert latent.shape == (target.n_obs, 5) and np.isfinite(latent).all()


def test_latent_alignment_trains_its_own_inner_encoder(two_species):
    context, target = two_species
    context_model = _context_model(context)
    model = speciesvi.TargetVI(target, context_model, alignment="latent", n_candidates=10)
    before = {k: v.clone() for k, v in model.module.inner_encoder.state_dict().items()}
    model.train(max_epochs=2, enable_progress_bar=False)
    after = model.module.inner_encoder.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_eta_zero_switches_the_alignment_off(two_species):
    context, target = two_species
    model = speciesvi.TargetVI(target, _context_model(context), n_candidates=10)
    model.train(max_epochs=2, plan_kwargs={"eta_start": 0.0, "eta_max": 0.0}, enable_progress_bar=False)
    assert (model.history["alignment_train"]["alignment_train"] == 0).all()


@pytest.mark.parametrize("gene_likelihood", ["zinb", "nb"])
@pytest.mark.parametrize("dispersion", ["gene", "gene-batch", "gene-cell"])
def test_best_candidate_maximises_the_decoders_likelihood(two_species, gene_likelihood, dispersion):
    """The chosen candidate is the one whose decoding (dropout off) gives the cell's counts the highest likelihood."""
    context, target = two_species
    model = speciesvi.TargetVI(
        target, _context_model(context), n_candidates=10, gene_likelihood=gene_likelihood, dispersion=dispersion
    )
    module = model.module.train()
    module.fast_selection = False
    module.context_z_std.zero_()  # candidates at their posterior means, so that the choice is deterministic
    cells = slice(0, 40)
    x = torch.as_tensor(target.X[cells].toarray() if hasattr(target.X, "toarray") else target.X[cells]).float()
    batch = torch.tensor(target.obs["batch"].cat.codes.to_numpy()[cells], dtype=torch.long).unsqueeze(1)
    candidates = torch.tensor(target.obsm["homolog_neighbors"][cells, :10], dtype=torch.long)
    log_library = torch.log(x.sum(1, keepdim=True))

    chosen = module.best_candidates(x, batch, log_library, candidates)

    assert module.training and module.decoder.training  # the decoder's mode is restored
    module.decoder.eval()
    with torch.no_grad():
        z = module.context_z_mean[candidates]  # (cells, k, latent)
        outputs = module.decoder.outputs(z.transpose(0, 1), batch)  # candidates first: (k, cells, genes)
        px = module.decoder.distribution(outputs, log_library)
        expected = candidates.gather(1, px.log_prob(x).sum(-1).argmax(0, keepdim=True).T).squeeze(1)
    torch.testing.assert_close(chosen, expected)


def test_save_load_round_trip_and_wrong_context_is_refused(two_species, tmp_path):
    context, target = two_species
    context_model = _context_model(context)
    model = speciesvi.TargetVI(target, context_model, n_candidates=10)
    model.train(max_epochs=1, enable_progress_bar=False)
    model.save(tmp_path / "target")
    assert [p.name for p in (tmp_path / "target").iterdir()] == ["model.pt"]  # one artefact, no context/ sub-folder
    loaded = speciesvi.TargetVI.load(tmp_path / "target", adata=target)
    assert loaded.context_model is None
    np.testing.assert_allclose(loaded.get_latent_representation(), model.get_latent_representation(), atol=1e-6)
    for name, value in model.module.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[name], value), name
    attached = speciesvi.TargetVI.load(tmp_path / "target", adata=target, context_model=context_model)
    assert attached.context_model is context_model
    other_context = _context_model(context, epochs=1)
    with pytest.raises(ValueError, match="different context model"):
        speciesvi.TargetVI.load(tmp_path / "target", adata=target, context_model=other_context)


def test_target_without_neighbours_is_refused(two_species):
    _, target = two_species
    fresh = _species("TGT_", 3)
    with pytest.raises(ValueError, match="homolog_neighbors"):
        speciesvi.TargetVI.setup_anndata(fresh, batch_key="batch")
    assert "homolog_neighbors" not in fresh.obsm and "_scvi_uuid" not in fresh.uns


def test_untrained_or_wrong_type_context_is_refused(two_species):
    context, target = two_species
    untrained = speciesvi.ContextVI(context, n_latent=5)
    with pytest.raises(ValueError, match="not trained"):
        speciesvi.TargetVI(target, untrained)
    with pytest.raises(TypeError, match="ContextVI"):
        speciesvi.TargetVI(target, "mouse_model")
    with pytest.raises(ValueError, match="top_percent"):
        speciesvi.TargetVI(target, _context_model(context, epochs=1), top_percent=0)


def test_context_anndata_changed_after_the_neighbours_is_refused(two_species):
    context, target = two_species
    changed = context[10:].copy()
    speciesvi.ContextVI.setup_anndata(changed, batch_key="batch", labels_key="labels")
    with pytest.raises(ValueError, match="homolog_neighbors was run against"):
        speciesvi.TargetVI(target, _context_model(changed, epochs=1))


def test_unseen_batch_category_is_refused(two_species):
    context, target = two_species
    model = speciesvi.TargetVI(target, _context_model(context, epochs=1), n_candidates=10)
    model.train(max_epochs=1, enable_progress_bar=False)
    query = target[:20].copy()
    query.obs["batch"] = "batch_new"
    with pytest.raises(ValueError):
        model.get_latent_representation(query)


def test_demo_pair_target_cells_land_near_their_mouse_type(trained_context, demo_pair):
    """Real data: human cells encoded by TargetVI sit among mouse cells of the same type."""
    mouse = trained_context.adata
    _, human = demo_pair
    speciesvi.pp.translate_genes(human, speciesvi.pp.homology_table("human", "mouse"), context=mouse)
    speciesvi.pp.homolog_neighbors(human, mouse, labels_key="cell_ontology_class")
    speciesvi.TargetVI.setup_anndata(human, batch_key="donor")
    model = speciesvi.TargetVI(human, trained_context)
    model.train(max_epochs=10, train_size=1.0, enable_progress_bar=False)
    mouse_labels = mouse.obs["cell_ontology_class"].astype(str).to_numpy()
    human_labels = human.obs["cell_ontology_class"].astype(str).to_numpy()
    knn = KNeighborsClassifier(n_neighbors=25).fit(trained_context.get_latent_representation(), mouse_labels)
    predicted = knn.predict(model.get_latent_representation())
    keep = np.isin(human_labels, shared_types(human_labels, mouse_labels))
    assert balanced_accuracy_score(human_labels[keep], predicted[keep]) > 0.5  # chance: 1/7
