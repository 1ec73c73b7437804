import numpy as np
import pytest
import scipy.sparse as sp
import scvi
from helpers import shared_types
from lightning.pytorch.callbacks import Callback
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import cross_val_predict
from sklearn.neighbors import KNeighborsClassifier

import speciesvi


@pytest.fixture
def synthetic():
    adata = scvi.data.synthetic_iid(batch_size=200, n_genes=100, n_batches=2, n_labels=3)
    speciesvi.ContextVI.setup_anndata(adata, batch_key="batch", labels_key="labels")
    return adata


def test_elbo_falls_during_training(synthetic):
    model = speciesvi.ContextVI(synthetic, n_latent=5)
    model.train(max_epochs=8, enable_progress_bar=False)
    elbo = model.history["elbo_train"]["elbo_train"].to_numpy()
    assert elbo[-1] < 0.9 * elbo[0]
    kl_weight = model.history["kl_weight"]["kl_weight"].to_numpy()
    assert (np.diff(kl_weight) >= 0).all() and 0.1 <= kl_weight.min() < kl_weight.max() <= 1.0


class _StepRecorder(Callback):
    """Records each training step's loss and minibatch size."""

    def __init__(self):
        self.steps = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append((trainer.current_epoch, float(outputs["loss"]), batch["X"].shape[0]))


def test_epoch_metrics_are_the_means_over_the_epochs_cells(synthetic):
    """The plan logs once per epoch what scvi-tools logs per step: the cell-weighted mean of the step losses."""
    recorder = _StepRecorder()
    model = speciesvi.ContextVI(synthetic, n_latent=5)
    model.train(max_epochs=3, batch_size=96, enable_progress_bar=False, callbacks=[recorder])
    steps = np.array(recorder.steps)
    assert len(set(steps[:, 2])) > 1  # a smaller last minibatch, so that the weighting matters
    for epoch in range(3):
        epoch_steps = steps[steps[:, 0] == epoch]
        expected = np.average(epoch_steps[:, 1], weights=epoch_steps[:, 2])
        np.testing.assert_allclose(model.history["train_loss"]["train_loss"].iloc[epoch], expected, rtol=1e-5)
    history = {key: model.history[key][key].to_numpy(dtype=float) for key in model.history}
    np.testing.assert_allclose(
        history["elbo_train"], history["reconstruction_loss_train"] + history["kl_local_train"], rtol=1e-5
    )
    assert len(history["kl_weight"]) == 3


def test_representations_and_normalized_expression(synthetic):
    model = speciesvi.ContextVI(synthetic, n_latent=5, n_hidden_outer=(64,), n_hidden_inner=(32,))
    model.train(max_epochs=1, enable_progress_bar=False)
    assert model.get_latent_representation().shape == (400, 5)
    assert model.get_latent_representation(representation="inter").shape == (400, 64)
    assert (model.get_latent_representation(representation="z_std") > 0).all()
    assert model.get_latent_representation(representation="library").shape == (400, 2)
    sampled = model.get_latent_representation(give_mean=False)
    assert not np.allclose(sampled, model.get_latent_representation())
    expression = model.get_normalized_expression(library_size=1.0)
    np.testing.assert_allclose(expression.sum(1), 1.0, rtol=1e-4)
    with pytest.raises(ValueError, match="representation"):
        model.get_latent_representation(representation="umap")
    assert model.labels_key == "labels"


def test_save_load_round_trip_gives_the_same_latent(synthetic, tmp_path):
    model = speciesvi.ContextVI(synthetic, n_latent=5, gene_likelihood="nb", dispersion="gene")
    model.train(max_epochs=2, enable_progress_bar=False)
    model.save(tmp_path / "context")
    with pytest.raises(ValueError, match="overwrite"):
        model.save(tmp_path / "context")
    model.save(tmp_path / "context", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "context").iterdir()) == ["model.pt"]
    loaded = speciesvi.ContextVI.load(tmp_path / "context", adata=synthetic)
    np.testing.assert_allclose(loaded.get_latent_representation(), model.get_latent_representation(), atol=1e-6)
    assert loaded.module.decoder.gene_likelihood == "nb"


def test_load_refuses_anndata_with_other_genes(synthetic, tmp_path):
    model = speciesvi.ContextVI(synthetic, n_latent=5)
    model.train(max_epochs=1, enable_progress_bar=False)
    model.save(tmp_path / "context")
    other = synthetic[:, ::-1].copy()
    with pytest.raises(ValueError):
        speciesvi.ContextVI.load(tmp_path / "context", adata=other)


def test_latent_predicts_held_out_mouse_labels(trained_context):
    """Real data: a 15-nearest-neighbour classifier on the latent recovers held-out mouse labels."""
    latent = trained_context.get_latent_representation()
    labels = trained_context.adata.obs["cell_ontology_class"].astype(str).to_numpy()
    predicted = cross_val_predict(KNeighborsClassifier(n_neighbors=15), latent, labels, cv=5)
    keep = np.isin(labels, shared_types(labels, labels))
    assert balanced_accuracy_score(labels[keep], predicted[keep]) > 0.85


def _snapshot(adata):
    return adata.obs.copy(), adata.X.copy(), dict(adata.uns)


@pytest.mark.parametrize(
    ("corrupt", "kwargs", "message"),
    [
        (lambda a: a.X.data.__setitem__(0, 0.5), {}, "non-integer"),
        (lambda a: a.X.data.__setitem__(0, -1.0), {}, "negative"),
        (lambda a: a.X.data.__setitem__(0, np.nan), {}, "NaN"),
        (lambda a: None, {"layer": "counts"}, "Layer 'counts'"),
        (lambda a: None, {"batch_key": "sample"}, "batch_key 'sample'"),
        (lambda a: None, {"labels_key": "cell_type"}, "labels_key 'cell_type'"),
    ],
)
def test_bad_input_raises_and_leaves_anndata_unchanged(demo_pair, corrupt, kwargs, message):
    mouse, _ = demo_pair
    mouse.X = sp.csr_matrix(mouse.X)
    corrupt(mouse)
    obs, x, uns = _snapshot(mouse)
    with pytest.raises(ValueError, match=message):
        speciesvi.ContextVI.setup_anndata(mouse, **{"batch_key": "donor", **kwargs})
    assert mouse.obs.equals(obs) and dict(mouse.uns) == uns
    assert (mouse.X != x).nnz == 0 or np.isnan(mouse.X.data).any()


def test_empty_anndata_is_refused(demo_pair):
    mouse, _ = demo_pair
    with pytest.raises(ValueError, match="empty"):
        speciesvi.ContextVI.setup_anndata(mouse[:0].copy(), batch_key="donor")


def test_dense_counts_are_checked_without_densifying_everything(demo_pair):
    mouse, _ = demo_pair
    small = mouse[:50].copy()
    small.layers["counts"] = small.X.toarray()
    small.layers["counts"][3, 3] = 1.5
    with pytest.raises(ValueError, match="non-integer"):
        speciesvi.ContextVI.setup_anndata(small, layer="counts")
