"""Per-label vote shares of TargetVI.transfer_labels (CellTypist's probability matrix) and mode="prob_match"."""

import matplotlib

matplotlib.use("Agg")

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import scvi
from test_similarity import prepare_species, train_pair

from speciesvi.module import NEIGHBORS_KEY
from speciesvi.pl import transfer_dotplot
from speciesvi.tl import (
    UNASSIGNED,
    anchored_vote,
    data_level_vote,
    keep_confident_data_level,
    label_order,
    prob_match,
    transfer_votes,
    vote,
    vote_shares,
)
from speciesvi.tl._transfer import check_mode

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOP_K = 10


# -- arrays --------------------------------------------------------------------------------------------
def test_vote_shares_count_each_label_and_agree_with_the_vote():
    rng = np.random.default_rng(0)
    categories = ["a", "b", "c", "d"]
    neighbors = rng.choice(categories, size=(200, 7)).astype(object)
    shares = vote_shares(neighbors, categories)
    assert shares.dtype == np.float32 and shares.shape == (200, 4)
    np.testing.assert_allclose(shares.sum(axis=1), 1.0, rtol=1e-6)
    labels, share = vote(neighbors)
    columns = np.array([categories.index(label) for label in labels])
    np.testing.assert_allclose(shares[np.arange(200), columns], share, rtol=1e-6)
    np.testing.assert_allclose(shares.max(axis=1), share, rtol=1e-6)  # the winner has the largest share
    # missing labels stay in the denominator, as in vote(); a label outside the categories counts nowhere
    partial = vote_shares(np.array([["a", None, "a", "x"]], dtype=object), categories)
    np.testing.assert_allclose(partial, [[0.5, 0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="repeat"):
        vote_shares(neighbors, ["a", "a"])
    with pytest.raises(ValueError, match=r"\(n_cells, k\)"):
        vote_shares(np.array(["a", "b"]), categories)


def test_prob_match_joins_every_label_over_the_threshold_in_category_order():
    probabilities = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.4, 0.3, 0.3], [0.0, 0.9, 0.1]])
    assert prob_match(probabilities, ["a", "b", "c"], 0.5).tolist() == ["a|b", "c", UNASSIGNED, "b"]
    assert prob_match(probabilities, ["a", "b", "c"], 0.3).tolist() == ["a|b", "b|c", "a|b|c", "b"]
    assert prob_match(probabilities, ["a", "b", "c"], 0.95).tolist() == [UNASSIGNED] * 4
    for bad in (0.0, 1.0, 1.5, -0.1, "0.5", True):
        with pytest.raises(ValueError, match=r"p_thres must be a number in \(0, 1\)"):
            prob_match(probabilities, ["a", "b", "c"], bad)
    with pytest.raises(ValueError, match="one column per category"):
        prob_match(probabilities, ["a", "b"], 0.5)


def test_label_order_and_mode():
    assert label_order(pd.Series(["b", None, "a", "b"])) == ["a", "b"]
    assert label_order(pd.Series(pd.Categorical(["b"], categories=["c", "b"]))) == ["c", "b"]
    assert check_mode("prob match") == "prob_match" and check_mode("best_match") == "best_match"
    with pytest.raises(ValueError, match="'best_match'.*'prob_match'"):
        check_mode("x")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_transfer_votes_at_best_match_is_the_old_pipeline_and_its_shares_follow_the_final_voters(seed):
    rng = np.random.default_rng(seed)
    n, k, n_context = 300, 10, 60
    context_labels = rng.choice(["a", "b", "c"], size=n_context).astype(object)
    context_labels[:3] = None  # unlabelled context cells do not vote
    voters = rng.integers(0, n_context, size=(n, k))
    # data-level neighbours: near-unanimous for a third of the cells, some missing (-1)
    data_level = rng.integers(0, n_context, size=(n, k))
    data_level[: n // 3] = np.flatnonzero(context_labels == "b")[0]
    data_level[n // 3 : n // 3 + 10, -2:] = -1
    anchors = rng.random(n) < 0.3
    categories = ["a", "b", "c"]

    result = transfer_votes(context_labels, categories, voters, data_level, anchors, 0.9, 0.9)
    label, share, check = anchored_vote(context_labels, voters, data_level, anchors, 0.9)
    data_label, data_share = data_level_vote(context_labels, data_level)
    label, share, kept = keep_confident_data_level(label, share, data_label, data_share, 0.9)
    np.testing.assert_array_equal(result.labels, label)
    np.testing.assert_array_equal(result.shares, share)
    assert result.check == check and result.n_kept == int(kept.sum())

    # the final voters: data-level neighbours where the data-level rules decided, the similar cells elsewhere
    assert result.data_level[: n // 3].all()
    similar = vote_shares(context_labels[voters], categories)
    data_labels = np.where(data_level >= 0, context_labels[np.clip(data_level, 0, None)], None)
    by_data = vote_shares(data_labels, categories)
    np.testing.assert_array_equal(result.probabilities[result.data_level], by_data[result.data_level])
    np.testing.assert_array_equal(result.probabilities[~result.data_level], similar[~result.data_level])
    assigned = result.labels != UNASSIGNED
    columns = np.array([categories.index(x) for x in result.labels[assigned]])
    np.testing.assert_allclose(result.probabilities[assigned, columns], result.shares[assigned], rtol=1e-6)
    np.testing.assert_allclose(result.probabilities.max(axis=1), result.shares, rtol=1e-6)

    matched = transfer_votes(context_labels, categories, voters, data_level, anchors, 0.9, 0.9, "prob_match", 0.3)
    np.testing.assert_array_equal(matched.labels, prob_match(result.probabilities, categories, 0.3))
    np.testing.assert_array_equal(matched.shares, result.shares)


# -- the model -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic_model():
    """TargetVI on synthetic species (three shared types, one novel); "random" context labels carry no signal."""
    scvi.settings.seed = 0
    context, target = prepare_species()
    context.obs["random"] = np.random.default_rng(0).choice(["r0", "r1", "r2"], size=context.n_obs)
    return train_pair(context, target)


@pytest.fixture(scope="module")
def best(synthetic_model):
    """transfer_labels at its defaults (best match) for "labels" and "random"."""
    table = synthetic_model.transfer_labels(["labels", "random"], n_candidates=40, top_k=TOP_K, key_added="best")
    return table


def test_probabilities_are_written_with_their_label_order(synthetic_model, best):
    target = synthetic_model.adata
    params = target.uns["best_params"]
    assert params["mode"] == "best_match" and params["p_thres"] == 0.5
    assert params["label_order"] == {"labels": ["alpha", "beta", "gamma"], "random": ["r0", "r1", "r2"]}
    for key, suffix in (("labels", "_labels"), ("random", "_random")):
        shares = target.obsm[f"best_{key}_probabilities"]
        order = params["label_order"][key]
        assert shares.dtype == np.float32 and shares.shape == (target.n_obs, len(order))
        np.testing.assert_allclose(shares.sum(axis=1), 1.0, rtol=1e-5)  # every context cell has a label
        np.testing.assert_allclose(shares.max(axis=1), best[f"vote_share{suffix}"], rtol=1e-6)
        labels = best[f"label{suffix}"].astype(str).to_numpy()
        assigned = labels != UNASSIGNED
        assert assigned.sum() > 0.5 * target.n_obs
        columns = np.array([order.index(x) for x in labels[assigned]])
        np.testing.assert_allclose(shares[assigned, columns], best[f"vote_share{suffix}"][assigned], rtol=1e-6)
        unique_max = (shares == shares.max(axis=1, keepdims=True)).sum(axis=1) == 1
        ok = assigned & unique_max
        assert ok.sum() > 0.5 * target.n_obs
        np.testing.assert_array_equal(np.asarray(order)[shares[ok].argmax(axis=1)], labels[ok])  # argmax = label


def test_cells_keeping_their_data_level_label_take_the_data_level_shares(synthetic_model, best):
    target = synthetic_model.adata
    neighbors = np.asarray(synthetic_model.adata_manager.get_from_registry(NEIGHBORS_KEY))[:, :TOP_K]
    context_labels = synthetic_model._context_labels("labels")
    data_labels = np.where(neighbors >= 0, context_labels[np.clip(neighbors, 0, None)], None)
    by_data = vote_shares(data_labels, ["alpha", "beta", "gamma"])
    confident = by_data.max(axis=1) >= 0.9
    assert confident.sum() > 20
    np.testing.assert_array_equal(target.obsm["best_labels_probabilities"][confident], by_data[confident])


def test_prob_match_gives_several_labels_or_none(synthetic_model, best):
    target = synthetic_model.adata
    kwargs = {"n_candidates": 40, "top_k": TOP_K, "unassigned_threshold": None}
    low = synthetic_model.transfer_labels("random", mode="prob_match", p_thres=0.2, key_added="low", **kwargs)
    shares = target.obsm["low_random_probabilities"]
    np.testing.assert_array_equal(shares, target.obsm["best_random_probabilities"])  # the mode only relabels
    labels = low["label"].astype(str).to_numpy()
    np.testing.assert_array_equal(labels, prob_match(shares, ["r0", "r1", "r2"], 0.2))
    assert (np.char.count(labels.astype(str), "|") >= 1).mean() > 0.5  # uninformative labels: ties of labels
    np.testing.assert_array_equal(target.obs["low_random"].astype(str), labels)
    high = synthetic_model.transfer_labels("random", mode="prob match", p_thres=0.95, key_added="high", **kwargs)
    none = high["label"].astype(str).to_numpy() == UNASSIGNED
    np.testing.assert_array_equal(none, (shares < 0.95).all(axis=1))
    assert none.mean() > 0.5
    assert target.uns["high_params"]["mode"] == "prob_match" and target.uns["high_params"]["p_thres"] == 0.95
    # vote share and confidence stay those of the best match (CellTypist's conf_score)
    np.testing.assert_allclose(high["vote_share"], best["vote_share_random"])


def test_prob_match_keeps_unassigned_novel_cells(synthetic_model, best):
    matched = synthetic_model.transfer_labels(n_candidates=40, top_k=TOP_K, mode="prob_match", key_added="pm")
    unassigned = best["label_labels"].astype(str).to_numpy() == UNASSIGNED
    assert (matched["label"].astype(str).to_numpy()[unassigned] == UNASSIGNED).all()
    np.testing.assert_allclose(matched["confidence"], best["confidence_labels"])


def test_bad_mode_or_threshold_raise_and_write_nothing(synthetic_model, best):
    target = synthetic_model.adata
    obs, obsm, uns = list(target.obs.columns), set(target.obsm), set(target.uns)
    with pytest.raises(ValueError, match="mode must be 'best_match'"):
        synthetic_model.transfer_labels(n_candidates=40, top_k=TOP_K, mode="x", key_added="bad")
    for p_thres in (0.0, 1.0, 2.0, None):
        with pytest.raises(ValueError, match=r"p_thres must be a number in \(0, 1\)"):
            synthetic_model.transfer_labels(n_candidates=40, top_k=TOP_K, p_thres=p_thres, key_added="bad")
    assert list(target.obs.columns) == obs and set(target.obsm) == obsm and set(target.uns) == uns


def test_probabilities_survive_h5ad(synthetic_model, best, tmp_path):
    target = synthetic_model.adata
    copy = ad.AnnData(
        obs=target.obs[["best_labels"]].copy(),
        obsm={"best_labels_probabilities": target.obsm["best_labels_probabilities"]},
        uns={"best_params": {"label_order": target.uns["best_params"]["label_order"]}},
    )
    copy.write_h5ad(tmp_path / "t.h5ad")
    back = ad.read_h5ad(tmp_path / "t.h5ad")
    np.testing.assert_array_equal(back.obsm["best_labels_probabilities"], target.obsm["best_labels_probabilities"])
    assert list(back.uns["best_params"]["label_order"]["labels"]) == ["alpha", "beta", "gamma"]


def test_transfer_dotplot_of_a_transfer(synthetic_model, best):
    target = synthetic_model.adata
    try:
        ax = transfer_dotplot(target, key="best_labels", groupby="labels", color="probability")
        truth = target.obs["labels"].astype(str)
        assert [t.get_text() for t in ax.get_yticklabels()] == sorted(set(truth))
        grey, dots = ax.collections[:2]
        order = target.uns["best_params"]["label_order"]["labels"]
        shares = target.obsm["best_labels_probabilities"]
        beta = (truth == "beta").to_numpy()
        row = sorted(set(truth)).index("beta")
        column = [t.get_text() for t in ax.get_xticklabels()].index("beta")
        (where,) = np.flatnonzero((dots.get_offsets() == [column, row]).all(axis=1))
        assert dots.get_array()[where] == pytest.approx(shares[beta, order.index("beta")].mean(), rel=1e-5)
    finally:
        plt.close("all")
