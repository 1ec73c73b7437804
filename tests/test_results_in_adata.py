"""homolog_lfc and cell_type_similarity keep their tables in the target's .uns; the readers give them back."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scvi
from test_similarity import prepare_species, train_pair

import speciesvi
from speciesvi.tl import CELL_TYPE_SIMILARITY_KEY, LFC_KEY, read_cell_type_similarity, read_homolog_lfc

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LFC_KWARGS = {"labels_key": "labels", "cell_types": ["alpha", "beta"], "n_samples": 300, "progress_bar": False}
SIMILARITY_KWARGS = {"target_labels_key": "labels", "n_target": 20, "n_context": 5}


@pytest.fixture(scope="module")
def model():
    """A briefly trained TargetVI on synthetic species: the tables need not be good, only kept."""
    scvi.settings.seed = 0
    context, target = prepare_species()
    return train_pair(context, target, epochs=2)


@pytest.fixture(scope="module")
def tables(model):
    """Both tables at the default keys."""
    lfc = model.homolog_lfc(random_state=0, **LFC_KWARGS)
    types = model.cell_type_similarity(scale="min_max", random_state=0, **SIMILARITY_KWARGS)
    return lfc, types


def test_defaults_write_both_tables_with_their_parameters(model, tables):
    lfc, types = tables
    assert LFC_KEY == "speciesvi_lfc" and CELL_TYPE_SIMILARITY_KEY == "speciesvi_cell_type_similarity"
    stored = model.adata.uns[LFC_KEY]
    assert stored["kind"] == "homolog_lfc" and stored["params"]["delta"] == 1.0
    read = read_homolog_lfc(model.adata)
    pd.testing.assert_frame_equal(read, lfc)
    assert read.attrs["params"]["labels_key"] == "labels" and read.attrs["params"]["n_samples"] == 300
    assert read.attrs["params"]["cells"]["beta"] == lfc.attrs["params"]["cells"]["beta"]
    read = read_cell_type_similarity(model.adata)
    pd.testing.assert_frame_equal(read, types)
    assert read.index.name == "labels" and read.columns.name == "labels"
    assert read.attrs["params"] == {
        "target_labels_key": "labels",
        "context_labels_key": "labels",
        "n_target": 20,
        "n_context": 5,
        "scale": "min_max",
        "random_state": 0,
    }
    assert types.attrs["params"] == read.attrs["params"]


def test_tables_survive_h5ad(model, tables, tmp_path):
    lfc, types = tables
    model.adata.write_h5ad(tmp_path / "target.h5ad")
    back = ad.read_h5ad(tmp_path / "target.h5ad")
    again = read_homolog_lfc(back)
    pd.testing.assert_frame_equal(again, lfc, check_index_type=True)
    assert list(again["cell_type"].cat.categories) == ["alpha", "beta"]
    assert again.attrs["params"]["precision"] == lfc.attrs["params"]["precision"]
    assert again.attrs["params"]["cells"]["alpha"] == lfc.attrs["params"]["cells"]["alpha"]
    similarity = read_cell_type_similarity(back)
    pd.testing.assert_frame_equal(similarity, types, check_index_type=True)
    assert similarity.attrs["params"] == types.attrs["params"]
    # and in a MuData of both species
    context = ad.AnnData(np.zeros((2, 1), dtype=np.float32))
    speciesvi.io.write_h5mu(tmp_path / "pair.h5mu", context, model.adata, context_name="c", target_name="t")
    _, target = speciesvi.io.read_h5mu(tmp_path / "pair.h5mu")
    pd.testing.assert_frame_equal(read_homolog_lfc(target), lfc)
    pd.testing.assert_frame_equal(read_cell_type_similarity(target), types)


def test_own_keys_none_and_copies(model, tables):
    lfc, _ = tables
    mine = model.homolog_lfc(random_state=0, key_added="beta_lfc", **LFC_KWARGS)
    pd.testing.assert_frame_equal(read_homolog_lfc(model.adata, "beta_lfc"), mine)
    read = read_homolog_lfc(model.adata, "beta_lfc")
    read["lfc"] = 0.0  # the reader returns a copy
    pd.testing.assert_frame_equal(read_homolog_lfc(model.adata, "beta_lfc"), mine)
    raw = model.cell_type_similarity(random_state=1, key_added="raw", **SIMILARITY_KWARGS)
    pd.testing.assert_frame_equal(read_cell_type_similarity(model.adata, "raw"), raw)
    uns = set(model.adata.uns)
    model.homolog_lfc(random_state=0, key_added=None, **LFC_KWARGS)
    model.cell_type_similarity(random_state=1, key_added=None, **SIMILARITY_KWARGS)
    assert set(model.adata.uns) == uns


def test_readers_and_writers_refuse_bad_keys(model, tables):
    with pytest.raises(ValueError, match=r"run TargetVI.homolog_lfc\(key_added='nope'\).*'speciesvi_lfc'"):
        read_homolog_lfc(model.adata, "nope")
    with pytest.raises(ValueError, match=r"run TargetVI.cell_type_similarity\(key_added='speciesvi_lfc'\)"):
        read_cell_type_similarity(model.adata, LFC_KEY)  # a table of the other kind
    with pytest.raises(ValueError, match="holds no table"):
        read_homolog_lfc(model.adata, "homolog_neighbors_params")
    uns = set(model.adata.uns)
    for bad in ("", 3):
        with pytest.raises(ValueError, match="key_added must be a non-empty string"):
            model.homolog_lfc(key_added=bad, **LFC_KWARGS)
        with pytest.raises(ValueError, match="key_added must be a non-empty string"):
            model.cell_type_similarity(key_added=bad, **SIMILARITY_KWARGS)
    assert set(model.adata.uns) == uns


def test_cell_type_similarity_finds_the_transfer_by_its_key(model, tables):
    model.transfer_labels(n_candidates=40, top_k=10, key_added="run")
    with pytest.raises(ValueError, match="transfer_key_added="):
        model.cell_type_similarity(n_target=20, n_context=5)  # no transfer under "speciesvi"
    table = model.cell_type_similarity(n_target=20, n_context=5, transfer_key_added="run", key_added="run_types")
    assert table.index.name == "run_labels"
    assert read_cell_type_similarity(model.adata, "run_types").attrs["params"]["target_labels_key"] == "run_labels"
    assert np.isfinite(table.to_numpy()).any()
    assert speciesvi.tl.read_cell_type_similarity is read_cell_type_similarity
