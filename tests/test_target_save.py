"""A TargetVI is one artefact: saved and loaded without its context model or data, and the earlier layout."""

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest
import scvi
import torch
from target_save_worker import outputs
from test_similarity import prepare_species

import speciesvi
from speciesvi.model._context_state import MAX_LABEL_CATEGORIES, label_columns
from speciesvi.model._encoding import encode_posteriors
from speciesvi.train import AlignmentTrainingPlan

WORKER = Path(__file__).with_name("target_save_worker.py")
LEGACY = Path(__file__).parent / "data" / "legacy_target"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pair():
    """A context model and a TargetVI on structured synthetic species; the context has extra obs columns."""
    scvi.settings.seed = 0
    context, target = prepare_species()
    context.obs["group"] = np.where(context.obs["labels"] == "alpha", "first", "other")  # strings
    context.obs["flag"] = context.obs["labels"] == "beta"  # booleans
    context.obs["depth"] = np.asarray(context.X.sum(1)).ravel()  # numbers: not kept
    kwargs = {"max_epochs": 2, "batch_size": 128, "train_size": 1.0, "enable_progress_bar": False}
    context_model = speciesvi.ContextVI(context, n_latent=5, n_hidden_outer=(64,), n_hidden_inner=(32,))
    context_model.train(**kwargs)
    model = speciesvi.TargetVI(target, context_model, n_candidates=10, n_hidden_decoder=(64,))
    model.train(**kwargs)
    return context_model, model


def test_a_saved_target_loads_in_a_fresh_process_without_its_context(pair, tmp_path):
    context_model, model = pair
    assert model._context_label_columns() == ["labels", "batch", "group", "flag"]  # not "depth": numbers
    before = outputs(model)
    model.save(tmp_path / "model")
    model.adata.write_h5ad(tmp_path / "target.h5ad")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["model.pt"]

    run = subprocess.run(
        [sys.executable, str(WORKER), str(tmp_path), str(tmp_path / "after.npz")],
        cwd=WORKER.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    after = np.load(tmp_path / "after.npz")
    assert sorted(after.files) == sorted(before)
    for name, value in before.items():
        if value.dtype.kind in "fc":
            np.testing.assert_allclose(after[name], value, rtol=0, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(after[name], value, err_msg=name)
    assert (before["labels_label"] != "Unassigned").any() and len(before["lfc_lfc"]) > 0


def test_the_carried_context_is_frozen_and_out_of_the_optimizer(pair):
    context_model, model = pair
    module = model.module
    for name, value in context_model.module.decoder.state_dict().items():
        assert torch.equal(module.context_decoder.state_dict()[name], value.cpu()), name
    carried, expected = model._context_posteriors(), encode_posteriors(context_model)  # as the context model encodes
    for field in ("z_mean", "z_std", "library_mean", "library_std", "batches"):
        np.testing.assert_array_equal(getattr(carried, field), getattr(expected, field), err_msg=field)
    assert model._context_var_names().equals(context_model.adata.var_names)
    assert model._context_obs_names().equals(context_model.adata.obs_names)
    pd.testing.assert_series_equal(model._context_label_column("labels"), context_model.adata.obs["labels"])
    frozen = {id(p) for p in module.context_decoder.parameters()} | {id(p) for p in module.inner_encoder.parameters()}
    assert not any(p.requires_grad for p in module.context_decoder.parameters())
    plan = AlignmentTrainingPlan(module, optimizer="AdamW", weight_decay=0.5)
    optimized = {id(p) for group in plan.configure_optimizers()["optimizer"].param_groups for p in group["params"]}
    assert optimized and not optimized & frozen
    state = {k: v.clone() for k, v in module.state_dict().items() if k.startswith(("context_", "inner_encoder."))}
    model.train(max_epochs=1, plan_kwargs={"optimizer": "AdamW", "weight_decay": 0.5}, enable_progress_bar=False)
    for name, value in state.items():
        assert torch.equal(module.state_dict()[name], value), name


def test_kept_context_columns():
    n = MAX_LABEL_CATEGORIES + 200
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(np.resize(["a", "b", None], n)),
            "donor": np.resize(["d1", "d2"], n).astype(object),
            "flag": np.resize([True, False], n),
            "barcode": [f"cell{i}" for i in range(n)],  # too many values
            "count": np.arange(n, dtype=float),  # numbers
            "cluster": np.resize([1, 2, 3], n),  # integers: make them categorical to keep them
            "_scvi_batch": np.zeros(n, dtype=int),
        }
    )
    kept = label_columns(obs, labels_key=None)
    assert list(kept) == ["cell_type", "donor", "flag"]
    assert kept["cell_type"].codes[2] == -1 and list(kept["flag"].categories) == [False, True]
    assert "barcode" in label_columns(obs, labels_key="barcode")  # the labels key is always kept


# -- the earlier layout: model.pt without the context state, the context model in context/ --------------------------
@pytest.fixture
def legacy(tmp_path):
    folder = tmp_path / "legacy"
    shutil.copytree(LEGACY / "model", folder)
    target = anndata.read_h5ad(LEGACY / "target.h5ad")
    context = anndata.read_h5ad(LEGACY / "context.h5ad")
    expected = pd.read_csv(LEGACY / "labels.csv", index_col=0)
    return folder, target, context, expected


def test_a_folder_of_the_earlier_layout_loads_with_its_context_data(legacy, tmp_path, caplog):
    folder, target, context, expected = legacy
    with pytest.raises(ValueError, match="context_adata=") as error:
        speciesvi.TargetVI.load(folder, adata=target)
    assert "earlier speciesvi" in str(error.value)
    with caplog.at_level(logging.INFO, logger="speciesvi"):
        model = speciesvi.TargetVI.load(folder, adata=target, context_adata=context)
    assert "save it again" in caplog.text
    assert model.context_model is not None  # loaded from context/ to rebuild the state
    labels = model.transfer_labels(n_candidates=20, top_k=5)
    np.testing.assert_array_equal(labels["label"].astype(str).to_numpy(), expected["label"].to_numpy())
    np.testing.assert_allclose(labels["confidence"].to_numpy(), expected["confidence"].to_numpy(), atol=1e-5)

    # saved again, the folder is self-contained
    model.save(folder, overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == ["model.pt"]
    with pytest.raises(ValueError, match="differ from the 60 genes"):
        speciesvi.TargetVI.load(folder, adata=target[:, ::-1].copy())
    again = speciesvi.TargetVI.load(folder, adata=target)
    np.testing.assert_allclose(again.get_latent_representation(), model.get_latent_representation(), atol=1e-6)
    relabelled = again.transfer_labels(n_candidates=20, top_k=5)
    np.testing.assert_array_equal(relabelled["label"].to_numpy(), labels["label"].to_numpy())


def test_a_folder_of_the_earlier_layout_without_its_context_folder_or_with_another_context(legacy):
    folder, target, context, _ = legacy
    other = speciesvi.ContextVI.load(folder / "context", adata=context)
    other.module.decoder.logits.bias.data += 1.0
    with pytest.raises(ValueError, match="different context model"):
        speciesvi.TargetVI.load(folder, adata=target, context_model=other)
    shutil.rmtree(folder / "context")
    with pytest.raises(ValueError, match="is missing"):
        speciesvi.TargetVI.load(folder, adata=target, context_adata=context)
