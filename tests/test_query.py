"""scArches query mapping onto a trained TargetVI (TargetVI.prepare_query_anndata / load_query_data)."""

import numpy as np
import pandas as pd
import pytest
import scvi
import torch

import speciesvi
from speciesvi.model._fingerprint import module_fingerprint

N_GENES, N_SHARED = 100, 80


def _species(prefix: str, seed: int, n_batches: int):
    scvi.settings.seed = seed
    adata = scvi.data.synthetic_iid(batch_size=120, n_genes=N_GENES, n_batches=n_batches, n_labels=3)
    adata.var_names = [f"{prefix}{i}" for i in range(N_GENES)]
    adata.obs["labels"] = adata.obs["labels"].astype(str)
    adata.obs["batch"] = adata.obs["batch"].astype(str)
    return adata


TABLE = pd.DataFrame(
    {
        "target_gene": [f"TGT_{i}" for i in range(N_SHARED)],
        "context_gene": [f"ctx_{i}" for i in range(N_SHARED)],
        "homology_type": "one2one",
    }
)


def _neighbors(adata, context):
    speciesvi.pp.homolog_neighbors(adata, context, labels_key="labels", n_neighbors=40, n_vote=10)


@pytest.fixture(scope="module")
def reference():
    """A context model and a TargetVI trained on two of three target batches; the third batch is the query."""
    context = _species("ctx_", 1, n_batches=2)
    speciesvi.ContextVI.setup_anndata(context, batch_key="batch", labels_key="labels")
    context_model = speciesvi.ContextVI(context, n_latent=5, n_hidden_outer=(64,), n_hidden_inner=(32,))
    context_model.train(max_epochs=2, enable_progress_bar=False)
    target = _species("TGT_", 2, n_batches=3)
    speciesvi.pp.translate_genes(target, TABLE)
    query = target[target.obs["batch"] == "batch_2"].copy()
    ref = target[target.obs["batch"] != "batch_2"].copy()
    _neighbors(ref, context)
    speciesvi.TargetVI.setup_anndata(ref, batch_key="batch", labels_key="labels")
    model = speciesvi.TargetVI(ref, context_model, n_candidates=10)
    model.train(max_epochs=3, enable_progress_bar=False)
    return context_model, model, query


@torch.no_grad()
def _nll(model) -> float:
    """Mean negative log-likelihood of the model's cells at their posterior means (deterministic)."""
    module = model.module.eval()
    tensors = next(iter(model._make_data_loader(adata=model.adata, batch_size=10_000, shuffle=False)))
    x, batch = tensors[scvi.REGISTRY_KEYS.X_KEY], tensors[scvi.REGISTRY_KEYS.BATCH_KEY]
    z = module.z_posterior(module.outer(x, batch))[0]
    px = module.generative(z, module.library_posterior(x, batch)[0], batch)["px"]
    return float(-px.log_prob(x).sum(-1).mean())


def _query(reference, query):
    query = query.copy()
    _neighbors(query, reference.context_model.adata)
    return query


def test_query_mapping_trains_only_the_new_batch_weights(reference):
    context_model, model, raw_query = reference
    query = _query(model, raw_query)
    reference_state = {k: v.clone() for k, v in model.module.state_dict().items()}
    context_print = module_fingerprint(context_model.module)

    mapped = speciesvi.TargetVI.load_query_data(query, model)
    assert not mapped.is_trained_ and mapped.context_model is context_model
    assert mapped.summary_stats.n_batch == 3 and mapped.query_reference_batches_ == 2
    trainable = {n for n, p in mapped.module.named_parameters() if p.requires_grad}
    assert "outer_encoder.blocks.0.fc_layers.Layer 0.0.weight" in trainable
    assert not any(n.startswith("inner_encoder") for n in trainable)
    assert "decoder.logits.weight" not in trainable

    before = {k: v.clone() for k, v in mapped.module.state_dict().items()}
    # the new donor starts as the average reference donor, in every layer with batch columns
    for key in (
        "outer_encoder.blocks.0.fc_layers.Layer 0.0.weight",
        "library_encoder.mlp.blocks.0.fc_layers.Layer 0.0.weight",
        "decoder.mlp.blocks.0.fc_layers.Layer 0.0.weight",
        "decoder.log_theta",
    ):
        torch.testing.assert_close(before[key][:, -1], before[key][:, -3:-1].mean(1))
        assert not torch.equal(before[key][:, -2], before[key][:, -3])  # reference batches differ: a real mean
    nll_before = _nll(mapped)
    mapped.train(max_epochs=10, enable_progress_bar=False)
    after = mapped.module.state_dict()
    assert _nll(mapped) < nll_before - 0.05  # the new donor's weights learned its counts (from the mean start)

    # the reference weights, and the reference batches' columns, are byte-identical; the query batch's columns moved
    outer = "outer_encoder.blocks.0.fc_layers.Layer 0.0.weight"
    assert torch.equal(after[outer][:, :-1], before[outer][:, :-1])
    assert not torch.equal(after[outer][:, -1], before[outer][:, -1])
    assert torch.equal(after["decoder.log_theta"][:, :2], before["decoder.log_theta"][:, :2])
    assert not torch.equal(after["decoder.log_theta"][:, 2], before["decoder.log_theta"][:, 2])
    for key in (
        "decoder.logits.weight",
        "inner_encoder.head.mean.weight",
        "outer_encoder.blocks.0.fc_layers.Layer 0.0.bias",
    ):
        assert torch.equal(after[key], reference_state[key]), key
    assert all(torch.equal(model.module.state_dict()[k], v) for k, v in reference_state.items())
    assert module_fingerprint(context_model.module) == context_print

    # label transfer on the new donor's cells without retraining the reference or the context; the
    # "Unassigned" rule uses the novelty location and scale estimated on the reference's cells
    assert model.novelty_calibration_ is None  # the reference never ran transfer_labels: estimated, not stored
    calibration = mapped.novelty_calibration_
    assert calibration["source"] == "reference" and calibration["scale"] > 0
    labels = mapped.transfer_labels(n_candidates=50, top_k=10)
    assert labels.shape[0] == query.n_obs and labels["label"].notna().all()
    params = query.uns["speciesvi_params"]
    assert params["novelty_calibration"]["source"] == "reference" and params["novelty_scale"] == calibration["scale"]
    own = mapped.transfer_labels(n_candidates=50, top_k=10, novelty_calibration="own", key_added="own")
    assert query.uns["own_params"]["novelty_scale"] != calibration["scale"]
    assert not np.allclose(own["p_known"], labels["p_known"])
    assert query.uns["own_params"]["novelty_calibration"]["source"] == "own"
    assert mapped.novelty_calibration_ == calibration  # transfer_labels leaves the model as it was
    latent = mapped.get_latent_representation()
    assert latent.shape == (query.n_obs, 5) and np.isfinite(latent).all()


def test_query_from_a_saved_reference_and_a_query_model_round_trip(reference, tmp_path, caplog):
    context_model, model, raw_query = reference
    model.save(tmp_path / "uncalibrated")
    query = _query(model, raw_query)
    with caplog.at_level("WARNING", logger="speciesvi"):
        mapped = speciesvi.TargetVI.load_query_data(query.copy(), tmp_path / "uncalibrated")
    assert mapped.novelty_calibration_ is None and "no novelty calibration" in caplog.text
    assert mapped.context_model is None  # the saved reference carries its context: none needed

    model.transfer_labels(n_candidates=50, top_k=10)
    assert model.novelty_calibration_ is None  # the record goes to the AnnData, not the model
    model.save(tmp_path / "reference", save_anndata=True)
    mapped = speciesvi.TargetVI.load_query_data(query, tmp_path / "reference")
    recorded = model.adata.uns["speciesvi_params"]["novelty_calibration"]
    assert recorded["source"] == "own" and mapped.novelty_calibration_ == dict(recorded, source="reference")
    mapped.train(max_epochs=1, enable_progress_bar=False)
    labels = mapped.transfer_labels(n_candidates=50, top_k=10, key_added="saved_reference")
    assert labels.shape[0] == query.n_obs and labels["label"].notna().all()
    mapped.save(tmp_path / "query")
    loaded = speciesvi.TargetVI.load(tmp_path / "query", adata=query)
    np.testing.assert_allclose(loaded.get_latent_representation(), mapped.get_latent_representation(), atol=1e-6)
    attached = speciesvi.TargetVI.load_query_data(query.copy(), tmp_path / "reference", context_model=context_model)
    assert attached.context_model is context_model


def test_missing_query_genes_are_padded_with_a_warning(reference):
    _, model, raw_query = reference
    query = raw_query[:, raw_query.var_names[7:]].copy()
    query = query[:, query.var_names[::-1]].copy()  # also reversed order
    with pytest.warns(UserWarning, match="7 of the reference model's 100 genes"):
        padded = speciesvi.TargetVI.prepare_query_anndata(query, model, inplace=False)
    assert query.n_vars == 93  # the user's AnnData is left as it was
    assert padded.var_names.equals(model.adata.var_names)
    assert padded.X[:, :7].sum() == 0
    np.testing.assert_array_equal(np.asarray(padded[:, "TGT_50"].X).ravel(), np.asarray(query[:, "TGT_50"].X).ravel())
    # padded genes keep their homolog from the reference AnnData
    assert padded.var.loc["TGT_3", "context_gene"] == "ctx_3"
    with pytest.warns(UserWarning, match="padded"):
        speciesvi.TargetVI.prepare_query_anndata(query, model)
    assert query.var_names.equals(model.adata.var_names)
    with pytest.raises(ValueError, match="prepare_query_anndata"):
        speciesvi.TargetVI.load_query_data(_query(model, raw_query[:, 5:].copy()), model)


def test_bad_queries_are_refused(reference, tmp_path):
    context_model, model, raw_query = reference
    known = raw_query.copy()
    known.obs["batch"] = "batch_1"
    with pytest.raises(ValueError, match=r"\['batch_1'\] already exist"):
        speciesvi.TargetVI.load_query_data(_query(model, known), model)
    with pytest.raises(ValueError, match="no data-level neighbours"):
        speciesvi.TargetVI.load_query_data(raw_query, model)
    unlabeled = _query(model, raw_query)
    del unlabeled.obs["labels"]
    with pytest.raises(ValueError, match="labels_key='labels'"):
        speciesvi.TargetVI.load_query_data(unlabeled, model)
    with pytest.raises(TypeError, match="TargetVI"):
        speciesvi.TargetVI.load_query_data(raw_query, context_model)


def test_reference_with_another_latent_size_or_neighbours_of_another_context_are_refused(reference, tmp_path):
    context_model, model, raw_query = reference
    model.save(tmp_path / "reference")
    other = speciesvi.ContextVI(context_model.adata, n_latent=7, n_hidden_outer=(64,), n_hidden_inner=(32,))
    other.train(max_epochs=1, enable_progress_bar=False)
    query = _query(model, raw_query)
    with pytest.raises(ValueError, match="5-dimensional latent space, the context model 7"):
        speciesvi.TargetVI.load_query_data(query, tmp_path / "reference", context_model=other)
    # a saved reference without its context still refuses neighbours computed against another context AnnData
    elsewhere = raw_query.copy()
    _neighbors(elsewhere, context_model.adata[10:].copy())
    with pytest.raises(ValueError, match="homolog_neighbors was run against"):
        speciesvi.TargetVI.load_query_data(elsewhere, tmp_path / "reference")


# -- ContextVI -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def context_reference():
    """A ContextVI trained on two of three batches of a context species; the third batch is the query."""
    adata = _species("ctx_", 1, n_batches=3)
    query = adata[adata.obs["batch"] == "batch_2"].copy()
    ref = adata[adata.obs["batch"] != "batch_2"].copy()
    speciesvi.ContextVI.setup_anndata(ref, batch_key="batch", labels_key="labels")
    model = speciesvi.ContextVI(ref, n_latent=5, n_hidden_outer=(64,), n_hidden_inner=(32,), n_hidden_decoder=(32,))
    model.train(max_epochs=2, enable_progress_bar=False)
    return model, query


#: What scArches trains in a query ContextVI: the batch columns of the first layers of the outer encoder and the
#: decoder, the new batch's dispersions, and the library encoder (as scvi-tools trains SCVI's ``l_encoder``).
CONTEXT_QUERY_TRAINABLE = {
    "outer_encoder.blocks.0.fc_layers.Layer 0.0.weight",
    "decoder.mlp.blocks.0.fc_layers.Layer 0.0.weight",
    "decoder.log_theta",
}


def test_context_query_mapping_trains_only_the_new_batch_weights(context_reference):
    model, raw_query = context_reference
    reference_state = {k: v.clone() for k, v in model.module.state_dict().items()}
    mapped = speciesvi.ContextVI.load_query_data(raw_query.copy(), model)
    assert not mapped.is_trained_ and mapped.summary_stats.n_batch == 3
    trainable = {n for n, p in mapped.module.named_parameters() if p.requires_grad}
    library = {n for n in trainable if n.startswith("library_encoder.")}
    assert trainable - library == CONTEXT_QUERY_TRAINABLE
    assert library == {n for n, _ in mapped.module.library_encoder.named_parameters(prefix="library_encoder")}

    before = {k: v.clone() for k, v in mapped.module.state_dict().items()}
    mapped.train(max_epochs=3, enable_progress_bar=False)
    after = mapped.module.state_dict()
    assert mapped.is_trained_
    batch_columns = {  # the weights with a column per batch: only the query batch's (the last) may move
        "outer_encoder.blocks.0.fc_layers.Layer 0.0.weight",
        "decoder.mlp.blocks.0.fc_layers.Layer 0.0.weight",
        "library_encoder.mlp.blocks.0.fc_layers.Layer 0.0.weight",
        "decoder.log_theta",
    }
    for key in batch_columns:  # batches are the last 3 columns: 2 reference batches, then the query's
        assert torch.equal(after[key][:, -3:-1], before[key][:, -3:-1]), key
        assert not torch.equal(after[key][:, -1], before[key][:, -1]), key
        if not key.startswith("library_encoder"):  # the library encoder trains whole, as SCVI's l_encoder
            assert torch.equal(after[key][:, :-3], before[key][:, :-3]), key
    frozen = [k for k in after if not k.startswith("library_encoder.") and k not in batch_columns]
    assert "inner_encoder.head.mean.weight" in frozen and "decoder.logits.weight" in frozen
    changed = [k for k in frozen if not torch.equal(after[k], before[k])]
    assert not changed, f"frozen reference weights moved: {changed}"
    assert all(torch.equal(model.module.state_dict()[k], v) for k, v in reference_state.items())  # reference untouched
    latent = mapped.get_latent_representation()
    assert latent.shape == (raw_query.n_obs, 5) and np.isfinite(latent).all()


def test_context_query_from_a_saved_reference_and_bad_queries(context_reference, tmp_path):
    model, raw_query = context_reference
    model.save(tmp_path / "context")
    mapped = speciesvi.ContextVI.load_query_data(raw_query.copy(), tmp_path / "context")
    assert {n for n, p in mapped.module.named_parameters() if p.requires_grad} >= CONTEXT_QUERY_TRAINABLE
    assert not mapped.module.inner_encoder.head.mean.weight.requires_grad
    np.testing.assert_array_equal(  # the reference's weights, as saved
        mapped.module.inner_encoder.head.mean.weight.detach(), model.module.inner_encoder.head.mean.weight.detach()
    )
    with pytest.warns(UserWarning, match="weight_decay > 0"):
        mapped.train(max_epochs=1, plan_config={"weight_decay": 1e-3}, enable_progress_bar=False)

    known = raw_query.copy()
    known.obs["batch"] = "batch_1"
    with pytest.raises(ValueError, match=r"\['batch_1'\] already exist"):
        speciesvi.ContextVI.load_query_data(known, model)
    unlabeled = raw_query.copy()
    del unlabeled.obs["labels"]
    with pytest.raises(ValueError, match="reference ContextVI was set up with labels_key='labels'"):
        speciesvi.ContextVI.load_query_data(unlabeled, model)
    with pytest.raises(TypeError, match="ContextVI"):
        speciesvi.ContextVI.load_query_data(raw_query.copy(), object())
