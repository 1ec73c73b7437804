from __future__ import annotations

from pathlib import Path

import pytest
import scvi

import speciesvi

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed():
    scvi.settings.seed = 0


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small tensors: on a busy machine, torch's thread pool costs more than it saves (``usefixtures`` per module)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def _selected_demo_pair():
    """The embedded Baron pair prepared as a user would: translated, then ``select_genes`` (donor batches)."""
    mouse, human = speciesvi.datasets.baron_pancreas()
    speciesvi.pp.translate_genes(human, speciesvi.pp.homology_table("human", "mouse"), context=mouse)
    speciesvi.pp.select_genes(human, mouse, target_batch_key="donor", context_batch_key="donor")
    return mouse, human


@pytest.fixture
def demo_pair(_selected_demo_pair):
    """Fresh copies of the Baron mouse (context) and human (target) demo data, translated and gene-selected.

    ``select_genes`` keeps each species' 4,000 most variable genes plus the homologs of the other's.
    """
    mouse, human = _selected_demo_pair
    return mouse.copy(), human.copy()


@pytest.fixture(scope="session")
def trained_context(_selected_demo_pair):
    """A ContextVI trained briefly on the Baron mouse demo data (selected genes; shared by several tests)."""
    scvi.settings.seed = 0
    mouse = _selected_demo_pair[0].copy()
    speciesvi.ContextVI.setup_anndata(mouse, batch_key="donor", labels_key="cell_ontology_class")
    model = speciesvi.ContextVI(mouse)
    model.train(max_epochs=15, train_size=1.0, enable_progress_bar=False)
    return model


@pytest.fixture(scope="session")
def trained_demo_target(trained_context, _selected_demo_pair):
    """A TargetVI trained briefly on 700 embedded human cells (1,500 HVGs), aligned to ``trained_context``."""
    import numpy as np
    import scanpy as sc

    mouse = trained_context.adata
    human = _selected_demo_pair[1]
    rng = np.random.default_rng(0)
    human = human[np.sort(rng.choice(human.n_obs, 700, replace=False))].copy()
    hvg = sc.pp.highly_variable_genes(human, flavor="seurat_v3", n_top_genes=1500, inplace=False)
    human = human[:, hvg["highly_variable"].to_numpy()].copy()
    speciesvi.pp.translate_genes(human, speciesvi.pp.homology_table("human", "mouse"), context=mouse)
    speciesvi.pp.homolog_neighbors(human, mouse, labels_key="cell_ontology_class")
    speciesvi.TargetVI.setup_anndata(human, batch_key="donor")
    scvi.settings.seed = 0
    model = speciesvi.TargetVI(human, trained_context)
    model.train(max_epochs=12, batch_size=64, train_size=1.0, enable_progress_bar=False)
    return model
