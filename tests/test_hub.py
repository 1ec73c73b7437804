"""scvi-hub model folders of speciesvi models (offline), and the pretrained model shipped with speciesvi."""

import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scvi
import torch

import speciesvi
from speciesvi.model._bundled import bundled_model_dir

try:
    from scvi.hub import HubModel
except ImportError:  # scvi.hub needs huggingface_hub: pip install 'speciesvi[hub]'
    HubModel = None
needs_hub = pytest.mark.skipif(HubModel is None, reason="scvi.hub needs huggingface_hub")

DOCS = Path(__file__).resolve().parents[1] / "docs"
N_GENES, N_SHARED = 60, 50


def _species(prefix: str, seed: int):
    scvi.settings.seed = seed
    adata = scvi.data.synthetic_iid(batch_size=80, n_genes=N_GENES, n_batches=2, n_labels=3)
    adata.var_names = [f"{prefix}{i}" for i in range(N_GENES)]
    adata.obs["labels"] = adata.obs["labels"].astype(str)
    return adata


@pytest.fixture(scope="module")
def small_pair():
    """A ContextVI and a TargetVI on two small synthetic species, each trained one epoch."""
    context, target = _species("ctx_", 1), _species("TGT_", 2)
    table = pd.DataFrame(
        {
            "target_gene": [f"TGT_{i}" for i in range(N_SHARED)],
            "context_gene": [f"ctx_{i}" for i in range(N_SHARED)],
            "homology_type": "one2one",
        }
    )
    speciesvi.pp.translate_genes(target, table, context=context)
    speciesvi.pp.homolog_neighbors(target, context, labels_key="labels", n_neighbors=20, n_vote=5)
    speciesvi.ContextVI.setup_anndata(context, batch_key="batch", labels_key="labels")
    context_model = speciesvi.ContextVI(context, n_latent=4, n_hidden_outer=(32,), n_hidden_inner=(16,))
    context_model.train(max_epochs=1, enable_progress_bar=False)
    speciesvi.TargetVI.setup_anndata(target, batch_key="batch")
    target_model = speciesvi.TargetVI(target, context_model, n_candidates=5)
    target_model.train(max_epochs=1, enable_progress_bar=False)
    return context_model, target_model


@needs_hub
def test_context_hub_round_trip(small_pair, tmp_path):
    context_model = small_pair[0]
    adata = context_model.adata
    expected = context_model.get_latent_representation()
    folder = tmp_path / "hub_context"
    hub_model = speciesvi.model.to_hub_model(context_model, folder, tissues=["synthetic"], description="A test.")
    assert isinstance(hub_model, HubModel)
    assert {p.name for p in folder.iterdir()} == {"model.pt", "_scvi_required_metadata.json", "README.md"}
    metadata = json.loads((folder / "_scvi_required_metadata.json").read_text())
    assert metadata["model_cls_name"] == "ContextVI" and metadata["model_parent_module"] == "speciesvi"
    assert metadata["scvi_version"] == scvi.__version__
    assert "model_cls_name:ContextVI" in hub_model.model_card.data.tags
    assert "A test." in hub_model.model_card.content

    # read back from disk alone, as after a download, and loaded through speciesvi's safe load
    reread = HubModel(str(folder))
    reread.load_model(adata=adata)
    assert type(reread.model) is speciesvi.ContextVI
    np.testing.assert_allclose(reread.model.get_latent_representation(), expected, atol=1e-6)

    with pytest.raises(ValueError, match="already exists"):
        speciesvi.model.to_hub_model(context_model, folder)
    # with the AnnData saved, load_model needs no argument; overwriting without it removes the stale file
    speciesvi.model.to_hub_model(context_model, folder, overwrite=True, save_anndata=True)
    saved = HubModel(str(folder))
    saved.load_model()
    np.testing.assert_allclose(saved.model.get_latent_representation(), expected, atol=1e-6)
    speciesvi.model.to_hub_model(context_model, folder, overwrite=True)
    assert not (folder / "adata.h5ad").exists()


@needs_hub
def test_hub_loading_stays_safe(small_pair, tmp_path):
    context_model = small_pair[0]
    folder = tmp_path / "hub_context"
    speciesvi.model.to_hub_model(context_model, folder)
    contents = torch.load(folder / "model.pt", map_location="cpu", weights_only=False)  # our own file: trusted
    contents["attr_dict"]["history_"] = _Payload(tmp_path / "marker.txt")
    torch.save(contents, folder / "model.pt")
    with pytest.raises(ValueError, match="arbitrary code"):
        HubModel(str(folder)).load_model(adata=context_model.adata)
    assert not (tmp_path / "marker.txt").exists()


class _Payload:
    """Unpickling this writes a marker file: what a malicious model file could do with any code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('code ran while loading')",))


@needs_hub
def test_target_hub_round_trip(small_pair, tmp_path):
    context_model, target_model = small_pair
    target = target_model.adata
    expected = target_model.get_latent_representation()
    expected_labels = target_model.transfer_labels(n_candidates=20, top_k=5, key_added="hub")["label"]

    # a TargetVI carries its context: the folder loads without the context model or data
    bare = tmp_path / "hub_target"
    speciesvi.model.to_hub_model(target_model, bare)
    assert {p.name for p in bare.iterdir()} == {"model.pt", "_scvi_required_metadata.json", "README.md"}
    card = (bare / "README.md").read_text()
    assert "load_model(adata=adata)" in card and "context_adata" not in card and "carried in `model.pt`" in card
    hub_model = HubModel(str(bare))
    hub_model.load_model(adata=target.copy())
    loaded = hub_model.model
    assert type(loaded) is speciesvi.TargetVI and loaded.context_model is None
    np.testing.assert_allclose(loaded.get_latent_representation(), expected, atol=1e-6)
    labels = loaded.transfer_labels(n_candidates=20, top_k=5, key_added="hub")["label"]
    np.testing.assert_array_equal(labels.astype(str).to_numpy(), expected_labels.astype(str).to_numpy())

    # with the target AnnData saved, load_model needs no argument; a context/ left by an earlier layout is removed
    full = tmp_path / "hub_target_full"
    (full / "context").mkdir(parents=True)
    (full / "context" / "model.pt").write_bytes(b"")
    speciesvi.model.to_hub_model(target_model, full, save_anndata=True, overwrite=True)
    assert (full / "adata.h5ad").is_file() and not (full / "context").exists()
    hub_model = HubModel(str(full))
    hub_model.load_model()
    np.testing.assert_allclose(hub_model.model.get_latent_representation(), expected, atol=1e-6)


@needs_hub
def test_to_hub_model_refuses_untrained_and_foreign_models(small_pair, tmp_path):
    adata = small_pair[0].adata.copy()  # set up afresh: earlier tests loaded copies of it from disk
    speciesvi.ContextVI.setup_anndata(adata, batch_key="batch", labels_key="labels")
    untrained = speciesvi.ContextVI(adata, n_latent=4, n_hidden_outer=(32,), n_hidden_inner=(16,))
    with pytest.raises(ValueError, match="not trained"):
        speciesvi.model.to_hub_model(untrained, tmp_path / "untrained")
    with pytest.raises(ValueError, match="speciesvi ContextVI or TargetVI"):
        speciesvi.model.to_hub_model(object(), tmp_path / "object")
    assert not (tmp_path / "untrained").exists()


def test_to_hub_model_without_huggingface_hub_says_what_to_install(small_pair, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "scvi.hub", raising=False)
    with pytest.raises(ImportError, match=re.escape("pip install 'speciesvi[hub]'")):
        speciesvi.model.to_hub_model(small_pair[0], tmp_path / "hub")
    assert not (tmp_path / "hub").exists()


# -- the pretrained model shipped with speciesvi --------------------------------------------------------
def test_pretrained_model_loads_offline_with_the_bundled_data():
    context = speciesvi.ContextVI.load_pretrained("baron_mouse_pancreas")
    assert type(context) is speciesvi.ContextVI and context.is_trained_
    mouse = context.adata
    assert mouse.shape == (1886, 5406) and context.labels_key == "cell_ontology_class"
    latent = context.get_latent_representation()
    assert latent.shape == (1886, context.module.n_latent) and np.isfinite(latent).all()
    assert all(p.dtype == torch.float32 for p in context.module.parameters())  # stored in float16, loaded as float32
    with bundled_model_dir("baron_mouse_pancreas") as folder:
        assert (folder / "model.pt").stat().st_size < 6e6  # keep the package small
        assert not (folder / "adata.h5ad").exists()
        metadata = json.loads((folder / "_scvi_required_metadata.json").read_text())
        assert metadata["model_cls_name"] == "ContextVI" and metadata["model_parent_module"] == "speciesvi"
        if HubModel is not None:  # the bundled folder is an scvi-hub folder too
            hub_model = HubModel(str(folder))
            hub_model.load_model(adata=mouse.copy())
            np.testing.assert_allclose(hub_model.model.get_latent_representation(), latent, atol=1e-5)

    # the user's own copy of the context data, with all its genes: restricted to the model's
    full_mouse = speciesvi.datasets.baron_pancreas()[0]
    again = speciesvi.ContextVI.load_pretrained("baron_mouse_pancreas", adata=full_mouse)
    assert again.adata is not full_mouse and list(again.adata.var_names) == list(mouse.var_names)
    np.testing.assert_allclose(again.get_latent_representation(), latent, atol=1e-5)
    with pytest.raises(ValueError, match="lacks 6 of the 5406 genes"):
        speciesvi.ContextVI.load_pretrained("baron_mouse_pancreas", adata=mouse[:, 6:].copy())


def test_unknown_pretrained_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="No pretrained model named 'mouse_brain'.*'baron_mouse_pancreas'"):
        speciesvi.ContextVI.load_pretrained("mouse_brain")


def _quick_start_code() -> str:
    """The first Python block under "## Quickest start" in docs/pretrained.md."""
    text = (DOCS / "pretrained.md").read_text(encoding="utf-8")
    section = text.split("## Quickest start", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


@pytest.mark.slow
def test_documented_quick_start_runs_and_labels_the_human_cells():
    code = _quick_start_code()
    assert "max_epochs=40" in code
    namespace: dict = {}
    exec(code.replace("max_epochs=40", "max_epochs=2"), namespace)  # the docs' code, with fewer epochs
    human, labels = namespace["human"], namespace["labels"]
    assert len(labels) == human.n_obs == 2142
    mouse_types = set(namespace["context"].adata.obs["cell_ontology_class"].astype(str))
    assert set(labels.astype(str)) <= mouse_types | {speciesvi.tl.UNASSIGNED}
    assert labels.astype(str).isin(mouse_types).mean() > 0.5
