"""TargetVI.transfer_labels and speciesvi.tl (votes, majority voting, evaluation)."""

import numpy as np
import pytest
import scvi
import torch
from helpers import shared_types
from sklearn.metrics import roc_auc_score
from test_similarity import prepare_species, train_pair

import speciesvi
from speciesvi.module._similarity import candidate_log_likelihood
from speciesvi.tl import evaluate_labels, histogram_mode, majority_voting, vote
from speciesvi.tl._labels import anchor_fallback

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def synthetic_model():
    """TargetVI on synthetic species: three shared types and one ("novel") the context lacks.

    The context's extra obs columns ("coarse", "random") exist before the TargetVI is built: it keeps them.
    """
    scvi.settings.seed = 0
    context, target = prepare_species()
    context.obs["coarse"] = np.where(context.obs["labels"] == "alpha", "first", "other")
    # labels that carry no information: two different sets of 25 neighbours rarely agree on them
    context.obs["random"] = np.random.default_rng(0).choice(["r0", "r1", "r2"], size=context.n_obs)
    return train_pair(context, target)


# -- synthetic species -------------------------------------------------------------------------------
def test_transfer_labels_recovers_the_shared_types_and_flags_the_novel_one(synthetic_model):
    model = synthetic_model
    target = model.adata
    target.obs["cluster"] = target.obs["labels"].astype(str)  # a perfect clustering, for majority voting
    result = model.transfer_labels(n_candidates=40, top_k=10, over_clustering="cluster")
    truth = target.obs["labels"].astype(str).to_numpy()
    shared = truth != "novel"
    labels = result["label"].astype(str).to_numpy()

    assert (labels[shared] == truth[shared]).mean() > 0.9
    assert (labels[~shared] == "Unassigned").mean() > 0.9 and (labels[shared] == "Unassigned").mean() < 0.05
    assert roc_auc_score(~shared, 1 - result["confidence"]) > 0.95
    assert ((result["confidence"] >= 0) & (result["confidence"] <= 1)).all()
    np.testing.assert_allclose(result["confidence"], result["vote_share"] * result["p_known"])
    assert (result["novelty"][~shared].min()) > result["novelty"][shared].median()
    voted = result["majority_voting"].astype(str).to_numpy()
    assert (voted[~shared] == "Unassigned").all() and (voted[shared] == truth[shared]).mean() > 0.9

    # written back, with the parameters
    assert list(result.index) == list(target.obs_names)
    np.testing.assert_array_equal(target.obs["speciesvi_labels"].astype(str), labels)
    np.testing.assert_allclose(target.obs["speciesvi_labels_confidence"], result["confidence"])
    assert (target.obs["speciesvi_labels_majority_voting"].astype(str) == voted).all()
    assert "speciesvi_novelty" in target.obs and "speciesvi_p_known" in target.obs
    params = target.uns["speciesvi_params"]
    assert params["labels_key"] == ["labels"] and params["top_k"] == 10 and params["n_candidates"] == 40
    assert params["unassigned_threshold"] == 0.5 and params["over_clustering"] == "cluster"
    assert params["n_unassigned"] == int((labels == "Unassigned").sum())

    # the transferred labels are the default target labels of cell_type_similarity
    table = model.cell_type_similarity(n_target=30, n_context=10)
    assert "Unassigned" not in table.index and set(table.index) <= {"alpha", "beta", "gamma"}


def test_transfer_labels_options(synthetic_model):
    model = synthetic_model
    context = model.context_model.adata
    result = model.transfer_labels(
        labels_key=["labels", "coarse"],
        n_candidates=30,
        top_k=30,
        unassigned_threshold=None,
        key_added="lt",
        store_similarities=True,
        data_level_fallback=None,
        keep_data_level=None,
    )
    for key in ("labels", "coarse"):
        assert {f"label_{key}", f"confidence_{key}", f"vote_share_{key}"} <= set(result.columns)
        assert f"lt_{key}" in model.adata.obs and f"lt_{key}_confidence" in model.adata.obs
    assert "Unassigned" not in set(result["label_labels"].astype(str))
    assert set(result["label_coarse"].astype(str)) <= {"first", "other"}
    sims, index = model.adata.obsm["lt_similarity"], model.adata.obsm["lt_similarity_index"]
    assert sims.shape == index.shape == (model.adata.n_obs, 30) and (np.diff(sims, axis=1) >= 0).all()
    # without the novelty rule, the label is the majority vote of the top_k most similar context cells
    voted, _ = vote(context.obs["labels"].astype(str).to_numpy()[index[:, :30]])
    np.testing.assert_array_equal(result["label_labels"].astype(str).to_numpy(), voted)
    np.testing.assert_allclose(result["best_similarity"], sims[:, 0])
    assert model.adata.uns["lt_params"]["unassigned_threshold"] == "None"


def test_cell_type_similarity_finds_the_matching_type(synthetic_model):
    model = synthetic_model
    table = model.cell_type_similarity(target_labels_key="labels", n_target=40, n_context=10)
    assert list(table.index) == ["alpha", "beta", "gamma", "novel"]
    assert list(table.columns) == ["alpha", "beta", "gamma"]
    assert np.isfinite(table.to_numpy()).all()
    # each shared type is explained best by its own context type
    assert (table.loc[["alpha", "beta", "gamma"]].idxmin(axis=1) == ["alpha", "beta", "gamma"]).all()
    scaled = model.cell_type_similarity(target_labels_key="labels", n_target=40, n_context=10, scale="min_max")
    assert np.allclose(scaled.max(axis=1), 1.0) and np.allclose(scaled.min(axis=1), 0.0)
    assert (scaled.idxmax(axis=1) == table.idxmin(axis=1)).all()
    maxed = model.cell_type_similarity(target_labels_key="labels", n_target=40, n_context=10, scale="max")
    assert np.allclose(maxed.min(axis=1), 0.0)
    with pytest.raises(ValueError, match="scale"):
        model.cell_type_similarity(target_labels_key="labels", scale="z")
    with pytest.raises(ValueError, match="transfer_labels"):
        model.cell_type_similarity(transfer_key_added="never_written")


def test_transfer_labels_rejects_bad_inputs(synthetic_model):
    model = synthetic_model
    with pytest.raises(ValueError, match="no obs column"):
        model.transfer_labels(labels_key="cell_type")
    for threshold in (0.0, 1.0, -0.2, 1.5):
        with pytest.raises(ValueError, match="unassigned_threshold"):
            model.transfer_labels(unassigned_threshold=threshold)
    with pytest.raises(ValueError, match="top_k"):
        model.transfer_labels(n_candidates=20, top_k=25)
    with pytest.raises(ValueError, match="top_k"):
        model.transfer_labels(top_k=0)
    with pytest.raises(ValueError, match="min_prop"):
        model.transfer_labels(over_clustering="labels", min_prop=2.0)
    with pytest.raises(ValueError, match="over_clustering"):
        model.transfer_labels(over_clustering="no_such_key")
    with pytest.raises(ValueError, match="over_clustering"):
        model.transfer_labels(over_clustering=np.zeros(3))
    with pytest.raises(ValueError, match="n_candidates"):
        model.transfer_labels(candidates="latent", n_candidates=10_000)
    with pytest.raises(ValueError, match="'data_level' or 'latent'"):
        model.transfer_labels(candidates="nearest")


def test_context_model_without_labels_is_refused():
    scvi.settings.seed = 0
    context, target = prepare_species()
    speciesvi.ContextVI.setup_anndata(context, batch_key="batch")  # no labels_key
    model = train_pair(context, target, epochs=1, batch_size=128)
    with pytest.raises(ValueError, match="no labels"):
        model.transfer_labels()
    with pytest.raises(ValueError, match="no labels"):
        model.transfer_labels_cell(0)
    assert model.transfer_labels(labels_key="labels", n_candidates=20, top_k=5).shape[0] == target.n_obs


# -- tl helpers --------------------------------------------------------------------------------------
def test_vote_breaks_ties_towards_the_more_similar_neighbour_and_skips_missing_labels():
    labels, share = vote(np.array([["a", "b", "b", "a"], ["c", None, None, "d"], [None, None, None, None]]))
    assert labels.tolist() == ["a", "c", "Unassigned"]
    np.testing.assert_allclose(share, [0.5, 0.25, 0.0])


def test_majority_voting_and_histogram_mode():
    labels = ["a", "a", "b", "Unassigned", "Unassigned", "c"]
    clusters = [0, 0, 0, 1, 1, 1]
    assert majority_voting(labels, clusters).tolist() == ["a", "a", "a", "Unassigned", "Unassigned", "Unassigned"]
    assert majority_voting(labels, clusters, min_prop=0.7).tolist() == ["Heterogeneous"] * 6
    with pytest.raises(ValueError, match="min_prop"):
        majority_voting(labels, clusters, min_prop=1.5)
    rng = np.random.default_rng(0)
    assert abs(histogram_mode(np.concatenate([rng.normal(3.0, 0.2, 2000), rng.uniform(-50, 50, 200)])) - 3.0) < 0.3
    assert histogram_mode(np.full(5, 2.0)) == 2.0 and np.isnan(histogram_mode(np.array([np.nan])))


def test_evaluate_labels():
    true = ["a"] * 4 + ["b"] * 4 + ["x"] * 2
    predicted = ["a", "a", "a", "b", "b", "b", "Unassigned", "Unassigned", "Unassigned", "a"]
    confusion, bacc, recall = evaluate_labels(true, predicted, reference=["a", "b", "c"])
    assert recall.to_dict() == {"a": 0.75, "b": 0.5}
    assert bacc == pytest.approx(0.625)
    assert confusion.loc["a", "a"] == pytest.approx(75.0) and confusion.loc["x", "Unassigned"] == pytest.approx(50.0)
    np.testing.assert_allclose(confusion.sum(axis=1), 100.0)
    assert list(confusion.columns) == ["a", "b", "Unassigned"]
    _, bacc_all, recall_all = evaluate_labels(true, predicted, shared_only=False)
    assert set(recall_all.index) == {"a", "b", "x"} and bacc_all == pytest.approx((0.75 + 0.5 + 0.0) / 3)
    _, _, recall_big = evaluate_labels(true, predicted, reference=["a"] * 5 + ["b"], min_cells=3)
    assert list(recall_big.index) == ["a"]
    with pytest.raises(ValueError, match="same length"):
        evaluate_labels(["a"], ["a", "b"])


# -- the real demo pair ------------------------------------------------------------------------------
@pytest.mark.slow
def test_demo_pair_transfer_flags_acinar_cells(trained_context, trained_demo_target):
    """Real data: mouse -> human on a subsample; acinar cells (human only) stand out as novel."""
    mouse = trained_context.adata
    model = trained_demo_target
    human = model.adata
    rng = np.random.default_rng(0)

    result = model.transfer_labels()
    truth = human.obs["cell_ontology_class"].astype(str).to_numpy()
    mouse_labels = mouse.obs["cell_ontology_class"].astype(str).to_numpy()
    shared = np.isin(truth, shared_types(truth, mouse_labels, min_cells=10))
    acinar = truth == "pancreatic acinar cell"
    _, bacc, _ = evaluate_labels(truth, result["label"], reference=mouse_labels, min_cells=10)
    assert bacc > 0.5
    both = shared | acinar
    assert roc_auc_score(acinar[both], 1 - result["confidence"].to_numpy()[both]) > 0.9
    unassigned = result["label"].astype(str).to_numpy() == "Unassigned"
    # a short training on a subsample explains the shared types less well than the 40 + 40 epochs of
    # benchmarks/bench_label_transfer.py, so more of them look novel there
    assert unassigned[acinar].mean() > 0.6 and unassigned[shared].mean() < 0.25

    # the log-library interpolation of the kernel agrees with the exact evaluation on real data
    cells = model._target_cells(np.arange(0, 700, 7), None)
    candidates = torch.as_tensor(rng.integers(0, mouse.n_obs, (cells.indices.size, 50)))
    args = (
        model.module.decoder,
        model.module.context_z_mean,
        candidates,
        cells.counts,
        torch.as_tensor(cells.batches),
        torch.as_tensor(cells.log_library),
    )
    exact = candidate_log_likelihood(*args, dense="exact")
    grid = candidate_log_likelihood(*args, dense="grid")
    spread = (exact.amax(1) - exact.amin(1)).median()
    assert (grid - exact).abs().max() < min(0.05, 1e-3 * float(spread))


def test_novelty_calibration_from_other_cells_flags_outliers_of_a_small_set():
    from scipy.stats import norm

    from speciesvi.tl._novelty import novelty_to_p_known

    # reference: 400 typical cells of two labels (different divergence per label)
    grid = norm.ppf(np.linspace(0.01, 0.99, 200))
    reference = np.concatenate([1.0 + 0.1 * grid, 2.0 + 0.1 * grid])
    groups = np.repeat(["a", "b"], 200)
    _, calibration = novelty_to_p_known(reference, groups)
    assert calibration["scale"] == pytest.approx(0.1, rel=0.1)
    assert calibration["location"]["b"] - calibration["location"]["a"] == pytest.approx(1.0, abs=0.02)
    # a small query (too few cells per label to estimate anything): typical cells stay, outliers go
    query = np.array([1.05, 0.95, 1.8, 2.1, 1.6, 2.7])
    p_known, stats = novelty_to_p_known(query, np.array(["a", "a", "a", "b", "b", "b"]), calibration=calibration)
    assert (p_known < 0.5).tolist() == [False, False, True, False, False, True]
    assert stats["scale"] == calibration["scale"]
    # an unknown label uses the overall location of the reference
    p_unknown, _ = novelty_to_p_known(np.array([calibration["overall"]]), np.array(["c"]), calibration=calibration)
    assert p_unknown[0] > 0.99


def test_labels_the_similarity_cannot_reproduce_on_the_anchors_keep_the_data_level_vote(synthetic_model):
    model = synthetic_model
    context = model.context_model.adata
    random_labels = context.obs["random"].astype(str).to_numpy()
    data_level, _ = vote(random_labels[model.adata.obsm["homolog_neighbors"][:, :25]])

    checked = model.transfer_labels(labels_key="random", unassigned_threshold=None, key_added="checked")
    check = model.adata.uns["checked_params"]["anchor_check"]["random"]
    assert check["data_level_labels"] == ["r0", "r1", "r2"] and check["n_data_level"] == model.adata.n_obs
    assert max(check["anchor_agreement"].values()) < 0.9
    np.testing.assert_array_equal(checked["label"].astype(str).to_numpy(), data_level)

    unchecked = model.transfer_labels(
        labels_key="random",
        unassigned_threshold=None,
        key_added="unchecked",
        data_level_fallback=None,
        keep_data_level=None,
    )
    assert (unchecked["label"].astype(str).to_numpy() != data_level).mean() > 0.2
    # informative labels pass the check untouched
    model.transfer_labels(key_added="informative")
    assert model.adata.uns["informative_params"]["anchor_check"]["labels"]["data_level_labels"] == []
    with pytest.raises(ValueError, match="data_level_fallback"):
        model.transfer_labels(data_level_fallback=1.5)


def test_cells_with_a_confident_data_level_vote_keep_their_data_level_label(synthetic_model):
    model = synthetic_model
    context_labels = model.context_model.adata.obs["random"].astype(str).to_numpy()
    data_level, data_share = vote(context_labels[model.adata.obsm["homolog_neighbors"][:, :25]])
    free = (
        model.transfer_labels(
            labels_key="random",
            unassigned_threshold=None,
            key_added="free",
            data_level_fallback=None,
            keep_data_level=None,
        )["label"]
        .astype(str)
        .to_numpy()
    )
    assert model.adata.uns["free_params"]["n_kept_data_level"] == {"random": 0}
    # every cell whose data-level share reaches the threshold keeps its data-level label, the others vote freely
    threshold = float(np.quantile(data_share, 0.5))
    gated = model.transfer_labels(
        labels_key="random",
        unassigned_threshold=None,
        key_added="gated",
        data_level_fallback=None,
        keep_data_level=threshold,
    )
    labels = gated["label"].astype(str).to_numpy()
    confident = data_share >= threshold
    np.testing.assert_array_equal(labels[confident], data_level[confident])
    np.testing.assert_array_equal(labels[~confident], free[~confident])
    params = model.adata.uns["gated_params"]
    assert params["keep_data_level"] == threshold
    assert params["n_kept_data_level"]["random"] == int((free[confident] != data_level[confident]).sum()) > 0
    # the novelty is judged within the similarity vote's groups, so p_known does not depend on the rule
    np.testing.assert_allclose(gated["p_known"], model.adata.obs["free_p_known"])
    with pytest.raises(ValueError, match="keep_data_level"):
        model.transfer_labels(keep_data_level=-0.1)


def test_anchor_fallback_flags_the_cells_of_labels_the_model_gets_wrong_on_anchors():
    model = np.array(["a", "a", "b", "b", "b", "c", "a", "b"])
    data = np.array(["a", "a", "a", "b", "b", "c", "c", "b"])
    anchors = np.array([True, True, True, True, True, True, False, False])
    use, agreement = anchor_fallback(model, data, anchors, 0.9)
    assert agreement == {"a": pytest.approx(2 / 3), "b": 1.0, "c": 1.0}
    # every cell the model or the data level calls "a"
    assert use.tolist() == [True, True, True, False, False, False, True, False]
    assert not anchor_fallback(model, data, anchors, 0.5)[0].any()
    with pytest.raises(ValueError, match="same length"):
        anchor_fallback(model, data[:3], anchors, 0.9)


def test_novelty_scale_is_per_label_so_a_wide_shared_type_is_not_eaten():
    from scipy.stats import norm

    from speciesvi.tl._novelty import novelty_to_p_known

    grid = norm.ppf(np.linspace(0.005, 0.995, 400))
    narrow = 1.0 + 0.1 * grid  # the typical label
    wide = 2.0 + 0.4 * grid[::4]  # a type whose cells diverge from the context more variably
    outliers = np.array([2.0, 2.5])  # novel cells that joined the narrow label
    novelty = np.concatenate([narrow, wide, outliers])
    groups = np.concatenate([np.repeat("narrow", 400), np.repeat("wide", 100), ["narrow", "narrow"]])
    p_known, stats = novelty_to_p_known(novelty, groups)
    assert stats["group_scale"]["wide"] == pytest.approx(0.4, rel=0.15)
    # pooled over the labels, weighted by size: (400 x 0.1 + 100 x 0.4) / 500; the narrow label is held to it
    assert stats["scale"] == pytest.approx(0.16, rel=0.15) and stats["group_scale"]["narrow"] == stats["scale"]
    assert (p_known[400:500] < 0.5).mean() < 0.01  # the wide type keeps its cells
    assert (p_known[-2:] < 0.5).all() and (p_known[:400] < 0.5).mean() < 0.01
    # a label's scale is never below the pooled one
    assert min(stats["group_scale"].values()) >= stats["scale"]


def test_majority_voting_over_leiden_clusters_of_the_latent_space(synthetic_model):
    model = synthetic_model
    result = model.transfer_labels(unassigned_threshold=None, over_clustering="leiden", key_added="leiden_voting")
    voted = result["majority_voting"].astype(str).to_numpy()
    labels = result["label"].astype(str).to_numpy()
    truth = model.adata.obs["labels"].astype(str).to_numpy()
    shared = truth != "novel"
    # every cluster takes one of its cells' labels, and the shared types stay right
    assert set(voted) <= set(labels)
    assert (voted[shared] == truth[shared]).mean() > 0.9
    assert model.adata.uns["leiden_voting_params"]["over_clustering"] == "leiden (computed on the latent space)"
