"""The array functions of speciesvi.tl that the model methods call, on small hand-made inputs."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from speciesvi.pp._homologs import homologous_gene_positions
from speciesvi.tl import UNASSIGNED
from speciesvi.tl._cell_types import sample_type_pairs, type_similarity_table
from speciesvi.tl._similarity import latent_neighbors, sort_by_similarity
from speciesvi.tl._transfer import (
    anchored_vote,
    data_level_vote,
    keep_confident_data_level,
    transfer_table,
    write_transfer,
)


def test_anchored_vote_falls_back_only_for_the_label_its_anchors_disagree_on():
    context_labels = np.array(["a"] * 5 + ["b"] * 5 + ["c"] * 5, dtype=object)
    n = 40
    # similarity voters: cells 0-9 ("a" by data) wrongly voted "b"; the rest agree with their data-level label
    data_level = np.repeat(np.array([[0, 1, 2], [5, 6, 7], [10, 11, 12]]), [10, 15, 15], axis=0)
    voters = data_level.copy()
    voters[:10] = [5, 6, 7]
    anchors = np.zeros(n, dtype=bool)
    anchors[::2] = True
    labels, shares, record = anchored_vote(context_labels, voters, data_level, anchors, 0.9)
    assert record["data_level_labels"] == ["a"]
    assert record["anchor_agreement"]["a"] == 0.0 and record["anchor_agreement"]["c"] == 1.0
    # the cells voted "a" or with data-level label "a" fall back: the 10 "a" cells, not the true "b" cells
    assert record["n_data_level"] == 10
    assert labels[:10].tolist() == ["a"] * 10 and set(labels[10:25]) == {"b"} and set(labels[25:]) == {"c"}
    assert np.allclose(shares, 1.0)
    plain, _, empty = anchored_vote(context_labels, voters, min_agreement=None)
    assert empty == {} and plain[:10].tolist() == ["b"] * 10
    with pytest.raises(ValueError, match="data_level_voters"):
        anchored_vote(context_labels, voters, min_agreement=0.9)


def test_data_level_vote_ignores_missing_neighbours():
    context_labels = np.array(["a", "b", "c"], dtype=object)
    labels, shares = data_level_vote(context_labels, np.array([[0, 0, 1, 2], [2, -1, -1, -1], [-1, -1, -1, -1]]))
    # -1 (no neighbour) neither votes nor picks the last context cell
    assert labels.tolist() == ["a", "c", UNASSIGNED]
    np.testing.assert_allclose(shares, [0.5, 0.25, 0.0])


def test_keep_confident_data_level_replaces_only_near_unanimous_cells():
    labels = np.array(["a", "a", "b", "c"], dtype=object)
    shares = np.array([0.6, 0.9, 1.0, 0.8])
    data = np.array(["b", "b", "b", UNASSIGNED], dtype=object)
    data_shares = np.array([0.95, 0.5, 1.0, 0.0])
    out, out_shares, kept = keep_confident_data_level(labels, shares, data, data_shares, 0.9)
    assert out.tolist() == ["b", "a", "b", "c"] and kept.tolist() == [True, False, False, False]
    np.testing.assert_allclose(out_shares, [0.95, 0.9, 1.0, 0.8])
    same, _, none_kept = keep_confident_data_level(labels, shares, data, data_shares, None)
    assert same.tolist() == labels.tolist() and not none_kept.any()
    with pytest.raises(ValueError, match="min_share"):
        keep_confident_data_level(labels, shares, data, data_shares, 1.5)


def test_transfer_table_and_its_record_in_anndata():
    votes = {
        "type": (np.array(["a", "b", "b", "b"], dtype=object), np.array([1.0, 0.5, 0.8, 0.6])),
        "coarse": (np.array(["x", "x", "y", "x"], dtype=object), np.array([1.0, 1.0, 1.0, 0.9])),
    }
    p_known = np.array([0.99, 0.2, 0.7, 0.9])
    names = pd.Index([f"cell{i}" for i in range(4)])
    table = transfer_table(votes, p_known, np.arange(4.0), -np.arange(4.0), names, 0.5, np.array([0, 1, 1, 1]))
    assert table["label_type"].tolist() == ["a", UNASSIGNED, "b", "b"]
    assert np.allclose(table["confidence_type"], votes["type"][1] * p_known)
    assert table["majority_voting_type"].tolist() == ["a", "b", "b", "b"]  # the cluster's majority
    every = transfer_table(votes, p_known, np.zeros(4), np.zeros(4), names, None)
    assert UNASSIGNED not in every["label_type"].tolist() and "majority_voting_type" not in every

    adata = ad.AnnData(obs=pd.DataFrame({"keep": list("pqrs")}, index=names))
    written = write_transfer(adata, table, ["type", "coarse"], "run", {"top_k": 3}, np.ones((4, 2)), np.zeros((4, 2)))
    assert isinstance(adata.obs["run_type"].dtype, pd.CategoricalDtype)
    assert adata.obs["run_coarse"].tolist() == ["x", UNASSIGNED, "y", "x"]
    assert adata.obs["keep"].tolist() == list("pqrs")  # the user's columns are untouched
    assert adata.uns["run_params"] == {"top_k": 3, "obs_keys": written}
    assert "run_type_majority_voting" in written and adata.obsm["run_similarity"].dtype == np.float32


def test_type_pairs_sample_each_context_type_and_the_table_finds_the_matching_type():
    rng = np.random.default_rng(0)
    target_labels = np.array(["A"] * 30 + ["B"] * 20 + [None] * 5, dtype=object)
    context_labels = np.array(["A"] * 12 + ["B"] * 3 + ["C"] * 40, dtype=object)
    pairs = sample_type_pairs(target_labels, context_labels, n_target=25, n_context=10, rng=rng)
    assert pairs.target_types == ["A", "B"] and pairs.context_types == ["A", "B", "C"]
    assert pairs.bounds.tolist() == [0, 10, 13, 23]  # type B has only 3 cells: all of them
    assert pairs.cells.size == 45 and target_labels[pairs.cells].tolist().count(None) == 0
    for c, name in enumerate(pairs.context_types):
        block = pairs.candidates[:, pairs.bounds[c] : pairs.bounds[c + 1]]
        assert (context_labels[block] == name).all()
        assert all(len(set(row)) == row.size for row in block)  # without replacement
    # similarity: low (similar) where the types match
    same = context_labels[pairs.candidates] == target_labels[pairs.cells][:, None]
    sims = np.where(same, 1.0, 5.0) + rng.normal(0, 0.1, same.shape)
    table = type_similarity_table(sims, pairs, target_labels, scale="min_max", target_name="t", context_name="c")
    assert table.loc["A", "A"] == pytest.approx(1.0) and table.loc["B", "B"] == pytest.approx(1.0)
    assert table.loc["A"].idxmin() != "A" and table.index.name == "t" and table.columns.name == "c"
    with pytest.raises(ValueError, match="scale"):
        type_similarity_table(sims, pairs, target_labels, scale="z")


def test_homologous_positions_pair_the_genes():
    var = pd.DataFrame({"context_gene": ["Ins1", None, "Gcg", "Nope"]}, index=["INS", "XIST", "GCG", "ABC"])
    target_idx, context_idx = homologous_gene_positions(var, pd.Index(["Sst", "Gcg", "Ins1"]))
    assert target_idx.tolist() == [0, 2] and context_idx.tolist() == [2, 1]
    with pytest.raises(ValueError, match="translate_genes"):
        homologous_gene_positions(pd.DataFrame(index=["INS"]), pd.Index(["Ins1"]))


def test_latent_neighbors_exact_and_sorting():
    rng = np.random.default_rng(1)
    index = rng.normal(size=(200, 3))
    query = index[:5] + 1e-4
    assert latent_neighbors(query, index, 1)[:, 0].tolist() == [0, 1, 2, 3, 4]
    sims, cands = sort_by_similarity(np.array([[3.0, 1.0, 1.0]]), np.array([[4, 5, 6]]))
    assert sims.tolist() == [[1.0, 1.0, 3.0]] and cands.tolist() == [[5, 6, 4]]
