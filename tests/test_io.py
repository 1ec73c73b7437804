"""Species pairs in one .h5mu file: round trip with results, inputs untouched, bad inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import speciesvi


@pytest.fixture
def pair_with_results(demo_pair):
    mouse, human = demo_pair
    mouse, human = mouse[::4].copy(), human[::4].copy()
    speciesvi.pp.translate_genes(human, speciesvi.pp.homology_table("human", "mouse"), context=mouse)
    speciesvi.pp.homolog_neighbors(human, mouse, labels_key="cell_ontology_class", n_neighbors=30, n_vote=5)
    return mouse, human


def test_round_trip_keeps_counts_and_results(pair_with_results, tmp_path):
    mouse, human = pair_with_results
    before_obs, before_names = human.obs.copy(), human.obs_names.copy()
    path = speciesvi.io.write_h5mu(tmp_path / "baron.h5mu", mouse, human, context_name="mouse", target_name="human")
    assert path.is_file() and not list(tmp_path.glob(".baron-*"))  # no temporary file left behind
    pd.testing.assert_frame_equal(human.obs, before_obs)
    assert human.obs_names.equals(before_names)

    context, target = speciesvi.io.read_h5mu(path)
    assert context.shape == mouse.shape and target.shape == human.shape
    assert (context.X != mouse.X).nnz == 0
    np.testing.assert_array_equal(target.obsm["homolog_neighbors"], human.obsm["homolog_neighbors"])
    assert (
        target.obs["homolog_neighbors_label"].astype(str).tolist()
        == human.obs["homolog_neighbors_label"].astype(str).tolist()
    )
    assert (
        target.uns["homolog_neighbors_params"]["context_fingerprint"]
        == (human.uns["homolog_neighbors_params"]["context_fingerprint"])
    )
    assert target.var["context_gene"].astype(str).tolist() == human.var["context_gene"].astype(str).tolist()


def test_modalities_can_be_chosen_by_name(pair_with_results, tmp_path):
    mouse, human = pair_with_results
    path = speciesvi.io.write_h5mu(tmp_path / "pair.h5mu", mouse, human, context_name="mouse", target_name="human")
    target, context = speciesvi.io.read_h5mu(path, context_name="human", target_name="mouse")
    assert target.n_obs == human.n_obs and context.n_obs == mouse.n_obs


def test_bad_inputs(pair_with_results, tmp_path):
    mouse, human = pair_with_results
    with pytest.raises(ValueError, match="must differ"):
        speciesvi.io.write_h5mu(tmp_path / "a.h5mu", mouse, human, context_name="x", target_name="x")
    with pytest.raises(ValueError, match=r"\.h5mu"):
        speciesvi.io.write_h5mu(tmp_path / "a.h5ad", mouse, human)
    with pytest.raises(TypeError, match="AnnData"):
        speciesvi.io.write_h5mu(tmp_path / "a.h5mu", mouse.to_df(), human)
    with pytest.raises(FileNotFoundError):
        speciesvi.io.read_h5mu(tmp_path / "missing.h5mu")
    path = speciesvi.io.write_h5mu(tmp_path / "b.h5mu", mouse, human)
    with pytest.raises(ValueError, match="no modality"):
        speciesvi.io.read_h5mu(path, context_name="zebrafish")
