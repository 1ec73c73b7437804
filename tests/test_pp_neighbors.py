from __future__ import annotations

import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from sklearn.metrics.pairwise import cosine_distances

import speciesvi.pp as pp
from speciesvi.pp._neighbors import _agreement, _vote

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LABELS = "cell_type"


def make_pair(
    n_target: int = 300, n_context: int = 240, n_genes: int = 120, seed: int = 0
) -> tuple[ad.AnnData, ad.AnnData, pd.DataFrame]:
    """Two 'species' with three cell types; homologs are G<i> (target) <-> g<i> (context)."""
    rng = np.random.default_rng(seed)
    types = np.array(["alpha", "beta", "gamma"])
    base = rng.gamma(1.0, 0.5, n_genes)
    profiles = np.tile(base, (3, 1))
    for t in range(3):
        profiles[t, t * 20 : t * 20 + 20] += 6.0  # 20 marker genes per type
    scale = np.exp(rng.normal(0, 0.3, n_genes))  # species-specific gene scaling

    def sample(n, gene_scale, names, extra, own_prefix):
        labels = rng.integers(0, 3, n)
        library = rng.uniform(0.5, 1.5, (n, 1))
        counts = rng.poisson(profiles[labels] * gene_scale * library)
        counts = np.hstack([counts, rng.poisson(1.0, (n, extra))]).astype(np.float32)
        adata = ad.AnnData(sparse.csr_matrix(counts))
        # genes of one species only; distinct symbols, so that no symbol match (ignoring case) pairs them
        adata.var_names = names + [f"{own_prefix}{i}" for i in range(extra)]
        adata.obs[LABELS] = pd.Categorical(types[labels])
        return adata

    target = sample(n_target, scale, [f"G{i}" for i in range(n_genes)], 10, "TGTonly")
    context = sample(n_context, np.ones(n_genes), [f"g{i}" for i in range(n_genes)], 15, "ctxonly")
    table = pd.DataFrame(
        {"target_gene": [f"G{i}" for i in range(n_genes)], "context_gene": [f"g{i}" for i in range(n_genes)]}
    ).assign(homology_type="one2one")
    pp.translate_genes(target, table, context=context)
    return target, context, table


@pytest.fixture
def pair():
    return make_pair()


def _snapshot(adata: ad.AnnData) -> ad.AnnData:
    return adata.copy()


def assert_untouched(adata: ad.AnnData, before: ad.AnnData) -> None:
    x, y = adata.X, before.X
    if sparse.issparse(x):
        for attr in ("indptr", "indices", "data"):
            np.testing.assert_array_equal(getattr(x, attr), getattr(y, attr))  # NaN == NaN here
    else:
        np.testing.assert_array_equal(x, y)
    pd.testing.assert_frame_equal(adata.obs, before.obs)
    pd.testing.assert_frame_equal(adata.var, before.var)
    assert set(adata.obsm.keys()) == set(before.obsm.keys())
    assert set(adata.uns.keys()) == set(before.uns.keys())
    assert set(adata.layers.keys()) == set(before.layers.keys())


# --- results ---------------------------------------------------------------------------------------------------


def test_outputs(pair):
    target, context, _ = pair
    context_before = _snapshot(context)
    pp.homolog_neighbors(target, context, LABELS, n_neighbors=50, n_vote=10)
    assert_untouched(context, context_before)

    nn = target.obsm["homolog_neighbors"]
    assert nn.dtype == np.int32 and nn.shape == (target.n_obs, 50)
    assert nn.min() >= 0 and nn.max() < context.n_obs
    assert all(len(set(row)) == 50 for row in nn)

    params = target.uns["homolog_neighbors_params"]
    assert params["labels_key"] == LABELS and params["n_neighbors"] == 50 and params["n_vote"] == 10
    assert params["method"] == "exact" and params["metric"] == "cosine"
    assert params["target_genes"] == [f"G{i}" for i in range(120)]
    assert params["context_genes"] == [f"g{i}" for i in range(120)]
    assert params["context_fingerprint"] == pp.adata_fingerprint(context, genes=params["context_genes"])

    # neighbours are the exact cosine neighbours on log1p counts of the homologous genes, nearest first
    x_t = np.log1p(target[:, params["target_genes"]].X.toarray())
    x_c = np.log1p(context[:, params["context_genes"]].X.toarray())
    dist = cosine_distances(x_t, x_c)
    stored = np.take_along_axis(dist, nn.astype(np.int64), axis=1)
    assert np.all(np.diff(stored, axis=1) >= -1e-6)
    np.testing.assert_allclose(stored[:, -1], np.sort(dist, axis=1)[:, 49], atol=1e-5)

    label = target.obs["homolog_neighbors_label"]
    assert isinstance(label.dtype, pd.CategoricalDtype)
    assert list(label.cat.categories) == list(context.obs[LABELS].cat.categories)
    assert (label.astype(str) == target.obs[LABELS].astype(str)).mean() > 0.95


def test_agreement_is_a_rank_within_each_predicted_label(pair):
    target, context, _ = pair
    pp.homolog_neighbors(target, context, LABELS, n_neighbors=60, n_vote=25)
    score = target.obs["homolog_neighbors_agreement"].to_numpy()
    label = target.obs["homolog_neighbors_label"].astype(str).to_numpy()
    codes = context.obs[LABELS].astype(str).to_numpy()[target.obsm["homolog_neighbors"][:, :25]]
    votes = (codes == label[:, None]).sum(axis=1)
    assert ((score >= 0) & (score < 1)).all()
    for name in np.unique(label):
        group = label == name
        n = group.sum()
        assert np.isclose(score[group].min(), 0.0)
        np.testing.assert_allclose(np.sort(score[group]), np.sort(1 - np.arange(1, n + 1) / n))
        # fewer votes never scores better (lower) than more votes
        order = np.argsort(score[group])
        assert np.all(np.diff(votes[group][order]) <= 0)
        assert abs((score[group] < 0.2).mean() - 0.2) <= 1 / n + 1e-9


def test_vote_ties_go_to_the_nearest_voter():
    neighbors = np.array([[0, 1, 2, 3], [2, 3, 0, 1], [4, 4, 4, 4]])
    codes = np.array([0, 0, 1, 1, -1])  # context cell 4 has no label
    distances = np.tile(np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32), (3, 1))
    winner, votes, mean_distance = _vote(neighbors, distances, codes, 2)
    assert winner.tolist() == [0, 1, -1]
    assert votes.tolist() == [2, 2, 0]
    np.testing.assert_allclose(mean_distance[:2], [0.15, 0.15])
    score = _agreement(winner, votes, mean_distance)
    assert score[2] == 1.0


def test_unlabelled_context_cells_do_not_vote(pair):
    target, context, _ = pair
    context.obs[LABELS] = context.obs[LABELS].cat.add_categories("unused")
    context.obs.loc[context.obs[LABELS] == "gamma", LABELS] = np.nan
    pp.homolog_neighbors(target, context, LABELS, n_neighbors=30, n_vote=5)
    predicted = target.obs["homolog_neighbors_label"]
    assert "gamma" not in set(predicted.dropna().astype(str))
    assert "unused" in predicted.cat.categories


def test_gene_selection_keeps_markers_and_inputs(pair):
    target, context, _ = pair
    target_before, context_before = _snapshot(target), _snapshot(context)
    pp.homolog_neighbors(target, context, LABELS, n_neighbors=30, n_top_genes=40, key_added="hvg")
    genes = target.uns["hvg_params"]["target_genes"]
    assert len(genes) == 40 and target.uns["hvg_params"]["n_top_genes"] == 40
    markers = {f"G{i}" for i in range(60)}
    assert len(markers.intersection(genes)) >= 27  # markers are half of the genes: enriched among the 40
    assert_untouched(context, context_before)
    np.testing.assert_array_equal(target.X.toarray(), target_before.X.toarray())
    pd.testing.assert_frame_equal(target.var, target_before.var)


def test_dense_input_and_layers_give_the_same_result(pair):
    target, context, _ = pair
    pp.homolog_neighbors(target, context, LABELS, n_neighbors=30)
    dense_t, dense_c = target.copy(), context.copy()
    dense_t.layers["counts"] = dense_t.X.toarray()
    dense_t.X = np.log1p(dense_t.layers["counts"])  # .X holds log data, the layer the counts
    dense_c.X = dense_c.X.toarray()
    pp.homolog_neighbors(dense_t, dense_c, LABELS, n_neighbors=30, layer="counts")
    np.testing.assert_array_equal(dense_t.obsm["homolog_neighbors"], target.obsm["homolog_neighbors"])
    assert dense_t.uns["homolog_neighbors_params"]["layer"] == "counts"


def test_backed_context(pair, tmp_path):
    target, context, _ = pair
    pp.homolog_neighbors(target, context, LABELS, n_neighbors=30, key_added="in_memory")
    context.write_h5ad(tmp_path / "context.h5ad")
    backed = ad.read_h5ad(tmp_path / "context.h5ad", backed="r")
    pp.homolog_neighbors(target, backed, LABELS, n_neighbors=30, key_added="backed")
    np.testing.assert_array_equal(target.obsm["backed"], target.obsm["in_memory"])
    backed.file.close()


def test_target_cells_without_counts(pair):
    target, context, _ = pair
    x = target.X.tolil()
    x[0, :120] = 0
    target.X = x.tocsr()
    with pytest.warns(UserWarning, match="1 target cells have no counts"):
        pp.homolog_neighbors(target, context, LABELS, n_neighbors=30)
    assert (target.obsm["homolog_neighbors"][0] == -1).all()
    assert pd.isna(target.obs["homolog_neighbors_label"].iloc[0])
    assert target.obs["homolog_neighbors_agreement"].iloc[0] == 1.0


def test_results_survive_h5ad(pair, tmp_path):
    target, context, _ = pair
    pp.homolog_neighbors(target, context, LABELS, n_neighbors=30)
    target.write_h5ad(tmp_path / "t.h5ad")
    back = ad.read_h5ad(tmp_path / "t.h5ad")
    np.testing.assert_array_equal(back.obsm["homolog_neighbors"], target.obsm["homolog_neighbors"])
    params = back.uns["homolog_neighbors_params"]
    assert list(params["context_genes"]) == target.uns["homolog_neighbors_params"]["context_genes"]
    assert dict(params["context_fingerprint"]) == pp.adata_fingerprint(context, genes=params["context_genes"])


def test_fingerprint_changes_with_cells_and_genes(pair):
    _, context, _ = pair
    fp = pp.adata_fingerprint(context)
    assert fp == pp.adata_fingerprint(context.copy())
    assert fp["obs_names_sha1"] != pp.adata_fingerprint(context[::-1])["obs_names_sha1"]
    assert fp["genes_sha1"] != pp.adata_fingerprint(context, genes=list(context.var_names[:10]))["genes_sha1"]
    assert pp.adata_fingerprint(context[:10])["n_obs"] == 10


# --- bad inputs: a clear ValueError, nothing changed ------------------------------------------------------------


def _corrupt(value: float):
    def apply(target, context):
        x = target.X.toarray()
        x[3, 5] = value
        target.X = sparse.csr_matrix(x)

    return apply


def _drop_translation(target, context):
    del target.var["context_gene"]


def _duplicate_target_genes(target, context):
    target.var_names = ["G1"] + list(target.var_names[1:])


def _duplicate_context_genes(target, context):
    context.var_names = ["g1"] + list(context.var_names[1:])


def _no_homologs(target, context):
    context.var_names = [f"x{i}" for i in range(context.n_vars)]


@pytest.mark.parametrize(
    ("corrupt", "kwargs", "message"),
    [
        (_drop_translation, {}, r"no 'context_gene' column.*translate_genes"),
        (_no_homologs, {}, "No homologous genes"),
        (None, {"labels_key": "missing"}, "'missing' is not a column of context.obs"),
        (_duplicate_target_genes, {}, "target.var_names has 1 duplicated"),
        (_duplicate_context_genes, {}, "context.var_names has 1 duplicated"),
        (_corrupt(-1.0), {}, "negative values"),
        (_corrupt(2.5), {}, "non-integer values"),
        (_corrupt(np.nan), {}, "NaN or infinite"),
        (None, {"n_neighbors": 1000}, "exceeds the 240 context cells"),
        (None, {"n_neighbors": 10, "n_vote": 11}, "n_vote must be"),
        (None, {"layer": "counts"}, "Layer 'counts' not found in target.layers"),
        (None, {"method": "faiss"}, "method must be"),
        (None, {"n_top_genes": 0}, "n_top_genes must be"),
    ],
)
def test_bad_inputs(pair, corrupt, kwargs, message):
    target, context, _ = pair
    if corrupt is not None:
        corrupt(target, context)
    target_before, context_before = _snapshot(target), _snapshot(context)
    args = {"labels_key": LABELS, "n_neighbors": 30} | kwargs
    with pytest.raises(ValueError, match=message):
        pp.homolog_neighbors(target, context, **args)
    assert_untouched(target, target_before)
    assert_untouched(context, context_before)


def test_few_homologous_genes_warn_with_the_number(pair):
    target, context, _ = pair
    context.var_names = [f"g{i}" if i < 30 else f"x{i}" for i in range(context.n_vars)]
    with pytest.warns(UserWarning, match="Only 30 homologous genes"):
        pp.homolog_neighbors(target, context, LABELS, n_neighbors=30)
    assert len(target.uns["homolog_neighbors_params"]["target_genes"]) == 30


def test_non_count_context_data(pair):
    target, context, _ = pair
    context.X = context.X.multiply(0.5).tocsr()
    before = _snapshot(target)
    with pytest.raises(ValueError, match="context contains non-integer values"):
        pp.homolog_neighbors(target, context, LABELS, n_neighbors=30)
    assert_untouched(target, before)


# --- real data -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def baron():
    if not (DATA / "baron_human_pancreas.h5ad").exists():
        pytest.skip(f"Baron data not found in {DATA}")
    human = ad.read_h5ad(DATA / "baron_human_pancreas.h5ad")
    mouse = ad.read_h5ad(DATA / "baron_mouse_pancreas.h5ad")
    return human, mouse


def test_baron_translation_and_data_level_labels(baron):
    human, mouse = baron
    human = human.copy()
    pp.translate_genes(human, pp.homology_table("human", "mouse"), context=mouse)
    n_h = int(human.var["context_gene"].notna().sum())
    assert 11_000 < n_h < 12_500  # one-to-one homologs measured in both species
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        pp.homolog_neighbors(human, mouse, "cell_ontology_class")
    params = human.uns["homolog_neighbors_params"]
    assert len(params["target_genes"]) == 4000 and params["method"] == "exact"

    truth = human.obs["cell_ontology_class"].astype(str).to_numpy()
    pred = human.obs["homolog_neighbors_label"].astype(str).to_numpy()
    n_h_types = human.obs["cell_ontology_class"].value_counts()
    n_m_types = mouse.obs["cell_ontology_class"].value_counts()
    shared = [t for t in n_h_types.index if n_h_types[t] >= 20 and n_m_types.get(t, 0) >= 20]
    assert len(shared) == 7
    balanced_accuracy = np.mean([(pred[truth == t] == t).mean() for t in shared])
    assert balanced_accuracy >= 0.83
    confident = human.obs["homolog_neighbors_agreement"].to_numpy() < 0.2
    assert (pred[confident] == truth[confident]).mean() > 0.95
