"""The sketch neighbour search (candidates on a truncated SVD, exact re-ranking)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import normalize

import speciesvi.pp as pp
from speciesvi.pp._knn import choose_method, cosine_knn

from .test_pp_neighbors import LABELS, make_pair


def _unit_rows(adata, genes):
    x = adata[:, genes].X.tocsr().astype(np.float32)
    return normalize(x.log1p())


def test_auto_method_by_size():
    assert choose_method("auto", 2_000, 2_000) == "exact"
    assert choose_method("auto", 100_000, 100_000) == "sketch"
    assert choose_method("auto", 1_000_000, 1_000_000) == "pynndescent"
    assert choose_method("pynndescent", 10, 10) == "pynndescent"
    with pytest.raises(ValueError, match="method must be"):
        choose_method("annoy", 10, 10)


def check_against_exact(method: str) -> None:
    """Approximate search on synthetic data: exact distances of the cells found, >90 % recall of the exact 25."""
    target, context, _ = make_pair(n_target=600, n_context=1500, n_genes=150, seed=1)
    genes_t = list(target.var_names[target.var["context_gene"].notna()])
    genes_c = list(target.var.loc[genes_t, "context_gene"])
    query, index = _unit_rows(target, genes_t), _unit_rows(context, genes_c)
    k = 50
    found, dist = cosine_knn(query, index, k, method, n_jobs=2, random_state=0)
    exact_dist, exact = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(index).kneighbors(query)
    assert found.shape == (600, k) and found.dtype == np.int32 and dist.dtype == np.float32
    assert np.all(np.diff(dist, axis=1) >= -1e-6)  # nearest first
    # returned distances are exact cosine distances of the returned cells
    recomputed = 1 - np.asarray(query.multiply(index[found[:, 0]]).sum(axis=1)).ravel()
    np.testing.assert_allclose(dist[:, 0], recomputed, atol=1e-5)
    recall = np.mean([len(np.intersect1d(a[:25], e[:25])) / 25 for a, e in zip(found, exact, strict=True)])
    assert recall > 0.9
    # an approximate search may miss a cell's nearest neighbour now and then (pynndescent runs threads, so not
    # bit-reproducibly), never find one nearer than the exact search, and find it for nearly every cell
    assert np.all(dist[:, 0] >= exact_dist[:, 0] - 1e-5)
    assert np.mean(np.abs(dist[:, 0] - exact_dist[:, 0]) < 1e-3) >= 0.99


def test_sketch_search_matches_exact():
    check_against_exact("sketch")


def test_homolog_neighbors_with_the_sketch(monkeypatch):
    target, context, _ = make_pair(n_target=400, n_context=500, seed=2)
    exact = target.copy()
    pp.homolog_neighbors(exact, context, LABELS, n_neighbors=40, method="exact")
    pp.homolog_neighbors(target, context, LABELS, n_neighbors=40, method="sketch", n_jobs=1)
    assert target.uns["homolog_neighbors_params"]["method"] == "sketch"
    agree = (target.obs["homolog_neighbors_label"] == exact.obs["homolog_neighbors_label"]).mean()
    assert agree > 0.98
