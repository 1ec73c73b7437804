from __future__ import annotations

from pathlib import Path

import pytest
import scvi

import speciesvi

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed():
    scvi.settings.seed = 0


@pytest.fixture
def demo_pair():
    """Fresh copies of the embedded Baron mouse (context) and human (target) demo data."""
    return speciesvi.datasets.baron_pancreas()


@pytest.fixture(scope="session")
def trained_context():
    """A ContextVI trained briefly on the embedded Baron mouse data (shared by several tests)."""
    scvi.settings.seed = 0
    mouse, _ = speciesvi.datasets.baron_pancreas()
    speciesvi.ContextVI.setup_anndata(mouse, batch_key="donor", labels_key="cell_ontology_class")
    model = speciesvi.ContextVI(mouse)
    model.train(max_epochs=15, train_size=1.0, enable_progress_bar=False)
    return model
