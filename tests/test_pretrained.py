"""Pretrained context models: archives and cached downloads, one context for several species, SCVI adoption."""

import tarfile

import numpy as np
import pandas as pd
import pytest
import scvi
import torch

import speciesvi
from speciesvi.model import archive_model, fetch_model
from speciesvi.model._fingerprint import module_fingerprint


def _synthetic(prefix: str, seed: int, n_genes: int = 60):
    scvi.settings.seed = seed
    adata = scvi.data.synthetic_iid(batch_size=100, n_genes=n_genes, n_batches=2, n_labels=3)
    adata.var_names = [f"{prefix}{i}" for i in range(n_genes)]
    adata.obs["labels"] = adata.obs["labels"].astype(str)
    return adata


@pytest.fixture(scope="module")
def small_context():
    context = _synthetic("ctx_", 1)
    speciesvi.ContextVI.setup_anndata(context, batch_key="batch", labels_key="labels")
    model = speciesvi.ContextVI(context, n_latent=4, n_hidden_outer=(32,), n_hidden_inner=(16,))
    model.train(max_epochs=1, enable_progress_bar=False)
    return model


# -- archives and downloads --------------------------------------------------------------------------
def test_load_from_folder_archive_and_cached_url(small_context, tmp_path):
    small_context.save(tmp_path / "ctx")
    archive = archive_model(tmp_path / "ctx", tmp_path / "ctx.tar.gz")
    adata = small_context.adata
    expected = small_context.get_latent_representation()
    cache = tmp_path / "cache"
    for source in (tmp_path / "ctx", archive, archive.as_uri()):
        loaded = speciesvi.ContextVI.load(source, adata=adata, cache_dir=cache)
        np.testing.assert_allclose(loaded.get_latent_representation(), expected, atol=1e-6)
        assert module_fingerprint(loaded.module) == module_fingerprint(small_context.module)
    # the download is cached: it still loads once the archive is gone
    url = archive.as_uri()
    archive.rename(tmp_path / "moved.tar.gz")
    assert (fetch_model(url, cache_dir=cache) / "model.pt").is_file()
    with pytest.raises(ConnectionError, match="offline"):
        fetch_model(url, cache_dir=cache, force_download=True)
    with pytest.raises(ConnectionError, match="local path"):
        fetch_model("http://127.0.0.1:9/context.tar.gz", cache_dir=cache, timeout=5)
    with pytest.raises(ValueError, match="SHA-256"):
        fetch_model(tmp_path / "moved.tar.gz", cache_dir=cache, sha256="0" * 64)
    with pytest.raises(ValueError, match="already exists"):
        archive_model(tmp_path / "ctx", tmp_path / "moved.tar.gz")


def test_bad_archives_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no saved model"):
        fetch_model(tmp_path / "empty")
    with pytest.raises(ValueError, match="nothing there"):
        fetch_model(tmp_path / "missing.tar.gz")
    evil = tmp_path / "evil.tar.gz"
    (tmp_path / "payload").write_text("x")
    with tarfile.open(evil, "w:gz") as tar:
        tar.add(tmp_path / "payload", arcname="../escaped")
    with pytest.raises(ValueError, match="outside"):
        fetch_model(evil, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "escaped").exists()


# -- one context, two target species ------------------------------------------------------------------
def test_one_pretrained_context_serves_two_target_species(trained_context, demo_pair, tmp_path):
    """Baron human and a synthetic third species (renamed human genes, partial orthologs) share one context."""
    mouse = trained_context.adata
    trained_context.save(tmp_path / "mouse_context")
    url = archive_model(tmp_path / "mouse_context", tmp_path / "mouse_context.tar.gz").as_uri()
    context = speciesvi.ContextVI.load(url, adata=mouse, cache_dir=tmp_path / "cache")
    weights = {k: v.clone() for k, v in context.module.state_dict().items()}
    assert module_fingerprint(context.module) == module_fingerprint(trained_context.module)

    _, human = demo_pair
    rng = np.random.default_rng(0)
    human = human[np.sort(rng.choice(human.n_obs, 300, replace=False))].copy()
    table = speciesvi.pp.homology_table("human", "mouse")
    speciesvi.pp.translate_genes(human, table)
    # third species: the same cells, genes renamed, orthologs known for only 60 % of the homologous genes
    third = human.copy()
    third.var = third.var[[]]
    third.var_names = [f"sp3_{g}" for g in human.var_names]
    homologs = human.var["context_gene"].dropna()
    kept = homologs[rng.random(homologs.size) < 0.6]
    third_table = pd.DataFrame(
        {"target_gene": [f"sp3_{g}" for g in kept.index], "context_gene": kept.to_numpy(), "homology_type": "one2one"}
    )
    speciesvi.pp.translate_genes(third, third_table)

    models = {}
    for name, adata in (("human", human), ("third", third)):
        speciesvi.pp.homolog_neighbors(adata, mouse, labels_key="cell_ontology_class")
        speciesvi.TargetVI.setup_anndata(adata, batch_key="donor")
        models[name] = speciesvi.TargetVI(adata, context)
        models[name].train(max_epochs=1, enable_progress_bar=False)

    n_human = models["human"]._homologous_genes()[0].size
    n_third = models["third"]._homologous_genes()[0].size
    assert n_third == kept.isin(mouse.var_names).sum() and 0.5 * n_human < n_third < 0.7 * n_human
    for model in models.values():
        assert model.context_model is context and model.context_fingerprint_ == module_fingerprint(context.module)
        assert np.isfinite(model.get_latent_representation()).all()
    for key, value in context.module.state_dict().items():
        assert torch.equal(value, weights[key]), key  # byte-identical after fitting both species


# -- an scvi-tools SCVI model as the context ------------------------------------------------------------
SCVI_SETTINGS = {
    "scvi defaults": {"dispersion": "gene-batch"},
    "scArches settings": {
        "use_layer_norm": "both",
        "use_batch_norm": "none",
        "encode_covariates": True,
        "use_observed_lib_size": False,
        "gene_likelihood": "nb",
    },
}


@pytest.mark.parametrize("settings", list(SCVI_SETTINGS), ids=list(SCVI_SETTINGS))
def test_scvi_model_adopted_as_context(settings, tmp_path):
    context = _synthetic("ctx_", 1)
    scvi.model.SCVI.setup_anndata(context, batch_key="batch", labels_key="labels")
    reference = scvi.model.SCVI(context, n_latent=4, n_hidden=32, **SCVI_SETTINGS[settings])
    reference.train(max_epochs=3, enable_progress_bar=False)

    adopted = speciesvi.ContextVI.from_scvi_model(reference, library_epochs=2)
    assert adopted.is_trained_ and adopted.adopted_from_["class"] == "SCVI"
    assert adopted.labels_key == "labels"
    np.testing.assert_allclose(
        adopted.get_latent_representation(), reference.get_latent_representation(), rtol=1e-4, atol=1e-5
    )
    scvi_std = reference.get_latent_representation(return_dist=True)[1] ** 0.5
    np.testing.assert_allclose(
        adopted.get_latent_representation(representation="z_std"), scvi_std, rtol=1e-3, atol=2e-4
    )
    # the decoders agree: same expression and zero-inflation for the same z and batch
    z = torch.randn(20, 4)
    batch = torch.randint(0, 2, (20, 1))
    reference.module.eval()
    px_scale, _, _, px_dropout = reference.module.decoder("gene", z, torch.zeros(20, 1), batch)
    rho = torch.softmax(adopted.module.expression_logits(z, batch), -1)
    torch.testing.assert_close(rho, px_scale, rtol=1e-4, atol=1e-6)
    if reference.module.gene_likelihood == "zinb":
        torch.testing.assert_close(
            adopted.module.decoder.zi_logits(adopted.module.decoder.hidden(z, batch)), px_dropout
        )

    # fitting the library encoder leaves every other weight byte-identical
    untrained = speciesvi.ContextVI.from_scvi_model(reference, library_epochs=0)
    for key, value in untrained.module.state_dict().items():
        if not key.startswith("library_encoder"):
            assert torch.equal(value, adopted.module.state_dict()[key]), key

    # a target species aligns to it, and the adopted context saves and loads like any ContextVI
    target = _synthetic("TGT_", 2)
    table = pd.DataFrame(
        {"target_gene": [f"TGT_{i}" for i in range(50)], "context_gene": [f"ctx_{i}" for i in range(50)]}
    )
    speciesvi.pp.translate_genes(target, table.assign(homology_type="one2one"))
    speciesvi.pp.homolog_neighbors(target, context, labels_key="labels", n_neighbors=40, n_vote=10)
    speciesvi.TargetVI.setup_anndata(target, batch_key="batch")
    model = speciesvi.TargetVI(target, adopted, n_candidates=10)
    model.train(max_epochs=2, enable_progress_bar=False)
    assert np.isfinite(model.get_latent_representation()).all()
    for key, value in adopted.module.inner_encoder.state_dict().items():
        assert torch.equal(model.module.inner_encoder.state_dict()[key], value)
    adopted.save(tmp_path / "adopted")
    loaded = speciesvi.ContextVI.load(tmp_path / "adopted", adata=context)
    np.testing.assert_allclose(loaded.get_latent_representation(), adopted.get_latent_representation(), atol=1e-6)
    assert loaded.adopted_from_ == adopted.adopted_from_


def test_unsupported_scvi_models_are_refused():
    context = _synthetic("ctx_", 1)
    scvi.model.SCVI.setup_anndata(context, batch_key="batch")
    with pytest.raises(TypeError, match="scvi.model.SCVI"):
        speciesvi.ContextVI.from_scvi_model("a model")
    with pytest.raises(ValueError, match="not trained"):
        speciesvi.ContextVI.from_scvi_model(scvi.model.SCVI(context))
    for kwargs, problem in (
        ({"n_layers": 2}, "injects the batch"),
        ({"latent_distribution": "ln"}, "latent_distribution"),
        ({"dispersion": "gene-label"}, "gene-label"),
        ({"gene_likelihood": "poisson"}, "poisson"),
    ):
        reference = scvi.model.SCVI(context, **kwargs)
        reference.is_trained_ = True  # the checks run before any weight is read
        with pytest.raises(ValueError, match=problem):
            speciesvi.ContextVI.from_scvi_model(reference, library_epochs=0)
