"""speciesvi.pp.select_genes, the translate_genes warning without context and the many-genes warning of setup_anndata."""

from __future__ import annotations

import logging
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from scipy import sparse
from test_pp_neighbors import make_pair

import speciesvi
import speciesvi.pp as pp
from speciesvi.pp._select import MANY_GENES, MIN_CELLS

N_TOP = 30


@pytest.fixture
def pair() -> tuple[ad.AnnData, ad.AnnData]:
    """Two synthetic species (G<i> <-> g<i> homologs, species-only genes) with two batches each."""
    target, context, _ = make_pair(n_genes=120)
    for adata in (target, context):
        adata.obs["batch"] = pd.Categorical(np.where(np.arange(adata.n_obs) % 2 == 0, "b0", "b1"))
    return target, context


def _hvg(adata: ad.AnnData, n_top: int, batch_key: str | None) -> set[str]:
    """scanpy's seurat_v3 most variable genes among the genes detected in at least 3 cells."""
    detected = adata[:, np.asarray((adata.X > 0).sum(axis=0)).ravel() >= MIN_CELLS]
    table = sc.pp.highly_variable_genes(
        detected, flavor="seurat_v3", n_top_genes=n_top, batch_key=batch_key, inplace=False
    )
    return set(detected.var_names[table["highly_variable"].to_numpy()])


def _homologs(target: ad.AnnData, context: ad.AnnData) -> dict[str, str]:
    """Target gene -> context gene, for the target genes whose homolog the context measures."""
    mapped = target.var["context_gene"].dropna().astype(str)
    return dict(mapped[mapped.isin(context.var_names)].items())


def assert_unchanged(adata: ad.AnnData, before: ad.AnnData) -> None:
    assert adata.var_names.equals(before.var_names) and adata.obs_names.equals(before.obs_names)
    x, y = adata.X, before.X
    if sparse.issparse(x):
        for attr in ("indptr", "indices", "data"):
            np.testing.assert_array_equal(getattr(x, attr), getattr(y, attr))  # NaN == NaN here
    else:
        np.testing.assert_array_equal(x, y)
    pd.testing.assert_frame_equal(adata.obs, before.obs)
    pd.testing.assert_frame_equal(adata.var, before.var)
    assert set(adata.uns.keys()) == set(before.uns.keys())
    for key, value in before.uns.items():
        assert adata.uns[key] == value
    assert set(adata.layers.keys()) == set(before.layers.keys())


def check_selection(target, context, target_sub, context_sub, n_top, target_batch, context_batch) -> None:
    """Both sides keep their most variable genes and the homologs of the other side's; nothing else."""
    homologs = _homologs(target, context)
    inverse = {c: t for t, c in homologs.items()}
    hvg_t, hvg_c = _hvg(target, n_top, target_batch), _hvg(context, n_top, context_batch)
    expected_t = hvg_t | {inverse[c] for c in hvg_c if c in inverse}
    expected_c = hvg_c | {homologs[t] for t in hvg_t if t in homologs}
    assert set(target_sub.var_names) == expected_t
    assert set(context_sub.var_names) == expected_c
    for t in hvg_t & set(homologs):  # every most variable target gene keeps its context homolog ...
        assert homologs[t] in context_sub.var_names
    for c in hvg_c & set(inverse):  # ... and vice versa
        assert inverse[c] in target_sub.var_names
    # the genes keep their order; the counts are those of the inputs
    assert list(target_sub.var_names) == [g for g in target.var_names if g in expected_t]
    assert list(context_sub.var_names) == [g for g in context.var_names if g in expected_c]
    assert (target_sub.X != target[:, target_sub.var_names].X).nnz == 0
    assert (context_sub.X != context[:, context_sub.var_names].X).nnz == 0
    kept_pairs = {t for t in target_sub.var_names if t in homologs}
    assert all(homologs[t] in context_sub.var_names for t in kept_pairs)
    params = target_sub.uns["select_genes_params"]
    assert params == context_sub.uns["select_genes_params"]
    assert params["n_target_genes"] == target_sub.n_vars and params["n_context_genes"] == context_sub.n_vars
    assert params["n_homologous_pairs"] == len(kept_pairs)
    assert params["n_target_genes_before"] == target.n_vars and params["n_context_genes_before"] == context.n_vars
    assert params["n_top_genes"] == n_top and params["flavor"] == "seurat_v3"
    assert params["target_batch_key"] == target_batch and params["context_batch_key"] == context_batch


# --- results ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_key", [None, "batch"])
def test_copies_leave_the_inputs_untouched(pair, batch_key):
    target, context = pair
    target_before, context_before = target.copy(), context.copy()
    out = pp.select_genes(target, context, N_TOP, batch_key, batch_key, inplace=False)
    assert_unchanged(target, target_before)
    assert_unchanged(context, context_before)
    target_sub, context_sub = out
    assert target_sub is not target and context_sub is not context
    assert N_TOP <= target_sub.n_vars < target.n_vars and N_TOP <= context_sub.n_vars < context.n_vars
    check_selection(target, context, target_sub, context_sub, N_TOP, batch_key, batch_key)
    assert target_sub.uns["translate_genes_params"] == target.uns["translate_genes_params"]
    assert target_sub.var["context_gene"].equals(target.var.loc[target_sub.var_names, "context_gene"])


def test_in_place_subsets_both(pair, caplog):
    target, context = pair
    target_before, context_before = target.copy(), context.copy()
    with caplog.at_level(logging.INFO, logger="speciesvi.pp"):
        assert pp.select_genes(target, context, N_TOP, target_batch_key="batch", context_batch_key="batch") is None
    check_selection(target_before, context_before, target, context, N_TOP, "batch", "batch")
    params = target.uns["select_genes_params"]
    assert f"kept {params['n_target_genes']} of {target_before.n_vars} target" in caplog.text
    assert f"{params['n_homologous_pairs']} homologous pairs" in caplog.text


def test_layers_are_read_and_subset(pair):
    target, context = pair
    for adata in (target, context):
        adata.layers["counts"] = adata.X.copy()
        adata.X = adata.X.multiply(1 / 3).tocsr()  # not counts: must not be read
    out = pp.select_genes(target, context, N_TOP, inplace=False, target_layer="counts", context_layer="counts")
    target_sub, context_sub = out
    assert target_sub.layers["counts"].shape == target_sub.shape
    assert target_sub.uns["select_genes_params"]["target_layer"] == "counts"
    assert target_sub.uns["select_genes_params"]["context_layer"] == "counts"
    for adata in (target, context):
        adata.X = adata.layers["counts"]
    expected = pp.select_genes(target, context, N_TOP, inplace=False)
    assert target_sub.var_names.equals(expected[0].var_names) and context_sub.var_names.equals(expected[1].var_names)


def test_dense_counts_give_the_same_genes(pair):
    target, context = pair
    sparse_result = pp.select_genes(target, context, N_TOP, inplace=False)
    target.X, context.X = target.X.toarray(), context.X.toarray()
    dense_result = pp.select_genes(target, context, N_TOP, inplace=False)
    for a, b in zip(sparse_result, dense_result, strict=True):
        assert a.var_names.equals(b.var_names)


def test_a_species_with_at_most_n_top_genes_keeps_all(pair):
    target, context = pair
    n_top = min(target.n_vars, context.n_vars)  # the context has more genes than the target
    target_sub, context_sub = pp.select_genes(target, context, n_top, inplace=False)
    assert target_sub.var_names.equals(target.var_names)
    homologs = set(_homologs(target, context).values())
    assert homologs <= set(context_sub.var_names)  # all target genes are kept, so all their homologs are


def test_rare_genes_are_never_most_variable(pair):
    target, context = pair
    x = target.X.tolil()
    for j in range(10):  # G0..G9: two cells with huge counts, the most variable genes if they were ranked
        x[:, j] = 0
        x[j, j] = x[j + 10, j] = 500
    target.X = x.tocsr()
    target_sub, context_sub = pp.select_genes(target, context, N_TOP, inplace=False)
    rare = [f"G{j}" for j in range(10)]
    hvg_c = _hvg(context, N_TOP, None)
    for j, gene in enumerate(rare):  # kept only as the homolog of a most variable context gene
        assert (gene in target_sub.var_names) == (f"g{j}" in hvg_c)
    assert target_sub.uns["select_genes_params"]["min_cells"] == MIN_CELLS
    # a species with no more than n_top_genes genes detected in 3 cells keeps those (and homologs as always)
    detected = target.var_names[np.asarray((target.X > 0).sum(axis=0)).ravel() >= MIN_CELLS]
    assert not set(rare) & set(detected)
    target_sub, _ = pp.select_genes(target, context, len(detected), inplace=False)
    hvg_c = _hvg(context, len(detected), None)
    expected = set(detected) | {t for t, c in _homologs(target, context).items() if c in hvg_c}
    assert set(target_sub.var_names) == expected


@pytest.mark.parametrize("n_small", [1, 3])  # 1: scanpy's loess would crash the process; 3: it raises
def test_small_batches(pair, n_small):
    target, context = pair
    batch = np.array(["b0"] * target.n_obs, dtype=object)
    batch[:n_small] = "tiny"
    target.obs["batch"] = pd.Categorical(batch)
    target_before, context_before = target.copy(), context.copy()
    with pytest.raises(ValueError, match="merge small batches or pass target_batch_key=None"):
        pp.select_genes(target, context, N_TOP, target_batch_key="batch")
    assert_unchanged(target, target_before)
    assert_unchanged(context, context_before)


def test_backed_or_empty_anndata_is_refused(pair, tmp_path):
    target, context = pair
    target.write_h5ad(tmp_path / "target.h5ad")
    backed = ad.read_h5ad(tmp_path / "target.h5ad", backed="r")
    with pytest.raises(ValueError, match=r"target is backed by a file.*to_memory\(\)"):
        pp.select_genes(backed, context, N_TOP)
    backed.file.close()
    with pytest.raises(ValueError, match="context has no cells"):
        pp.select_genes(target, context[:0].copy(), N_TOP)


def test_warns_when_translation_skipped_the_context(pair, caplog):
    target, context = pair
    table = pd.DataFrame(
        {"target_gene": [f"G{i}" for i in range(120)], "context_gene": [f"g{i}" for i in range(120)]}
    ).assign(homology_type="one2one")
    with pytest.warns(UserWarning, match="context="):
        pp.translate_genes(target, table)
    with caplog.at_level(logging.WARNING, logger="speciesvi.pp"):
        pp.select_genes(target, context, N_TOP)
    assert "translate_genes ran without context=" in caplog.text


def test_demo_pair_keeps_homologs_of_both_species():
    mouse, human = speciesvi.datasets.baron_pancreas()
    assert (human.n_vars, mouse.n_vars) == (20125, 14877)  # the demo pair ships all genes
    pp.translate_genes(human, pp.homology_table("human", "mouse"), context=mouse)
    human_before, mouse_before = human.copy(), mouse.copy()
    human_sub, mouse_sub = pp.select_genes(
        human, mouse, target_batch_key="donor", context_batch_key="donor", inplace=False
    )
    assert_unchanged(human, human_before)
    assert_unchanged(mouse, mouse_before)
    check_selection(human, mouse, human_sub, mouse_sub, 4000, "donor", "donor")
    params = human_sub.uns["select_genes_params"]
    assert 5000 < params["n_target_genes"] < 7000 and 5000 < params["n_context_genes"] < 7000
    assert params["n_homologous_pairs"] > 4000
    assert human_sub.n_vars < MANY_GENES and mouse_sub.n_vars < MANY_GENES
    # a few hundred cells with small donor batches: rare genes would break seurat_v3's loess fit
    rng = np.random.default_rng(0)
    mouse = mouse[np.sort(rng.choice(mouse.n_obs, 500, replace=False))].copy()
    human = human[np.sort(rng.choice(human.n_obs, 400, replace=False))].copy()
    human_sub, mouse_sub = pp.select_genes(
        human, mouse, target_batch_key="donor", context_batch_key="donor", inplace=False
    )
    check_selection(human, mouse, human_sub, mouse_sub, 4000, "donor", "donor")


# --- errors: a ValueError that says what to do, both AnnData objects unchanged --------------------------------------
def _corrupt(where: str, how: str):
    def corrupt(target: ad.AnnData, context: ad.AnnData) -> None:
        adata = target if where == "target" else context
        adata.X.data[3] = {"negative": -1.0, "non-integer": 0.5, "NaN": np.nan}[how]

    return corrupt


def _untranslated(target: ad.AnnData, context: ad.AnnData) -> None:
    del target.var["context_gene"]


def _missing_batches(target: ad.AnnData, context: ad.AnnData) -> None:
    batch = target.obs["batch"].astype(object)
    batch.iloc[:3] = np.nan
    target.obs["batch"] = batch


@pytest.mark.parametrize(
    ("corrupt", "kwargs", "message"),
    [
        (_untranslated, {}, r"run speciesvi\.pp\.translate_genes\(target, table, context=context\) first"),
        (None, {"n_top_genes": 0}, "positive integer"),
        (None, {"n_top_genes": -5}, "positive integer"),
        (None, {"n_top_genes": 2.5}, "positive integer"),
        (None, {"n_top_genes": "100"}, "positive integer"),
        (None, {"n_top_genes": True}, "positive integer"),
        (None, {"n_top_genes": 131}, r"exceeds the genes of a species.*n_top_genes <= 130"),
        (None, {"target_batch_key": "donor"}, "'donor' is not a column of target.obs"),
        (None, {"context_batch_key": "donor"}, "'donor' is not a column of context.obs"),
        (_missing_batches, {"target_batch_key": "batch"}, r"target.obs\['batch'\] has missing values"),
        (_corrupt("target", "negative"), {}, "target contains negative values"),
        (_corrupt("target", "non-integer"), {}, "target contains non-integer values"),
        (_corrupt("target", "NaN"), {}, "target contains NaN"),
        (_corrupt("context", "negative"), {}, "context contains negative values"),
        (_corrupt("context", "non-integer"), {}, "context contains non-integer values"),
        (_corrupt("context", "NaN"), {}, "context contains NaN"),
        (None, {"target_layer": "counts"}, "Layer 'counts' not found in target.layers"),
    ],
)
@pytest.mark.parametrize("inplace", [True, False])
def test_bad_input_raises_and_changes_nothing(pair, corrupt, kwargs, message, inplace):
    target, context = pair
    if corrupt is not None:
        corrupt(target, context)
    target_before, context_before = target.copy(), context.copy()
    with pytest.raises(ValueError, match=message):
        pp.select_genes(target, context, **{"n_top_genes": N_TOP, "inplace": inplace, **kwargs})
    assert_unchanged(target, target_before)
    assert_unchanged(context, context_before)


def test_context_homolog_of_two_target_genes_is_refused(pair):
    target, context = pair
    target.var.loc["G1", "context_gene"] = "g0"  # g0 is now the homolog of G0 and G1
    target_before, context_before = target.copy(), context.copy()
    with pytest.raises(ValueError, match="one-to-one"):
        pp.select_genes(target, context, N_TOP)
    assert_unchanged(target, target_before)
    assert_unchanged(context, context_before)


# --- translate_genes without context ---------------------------------------------------------------------------------
def test_translate_genes_without_context_warns_at_the_caller():
    adata = ad.AnnData(np.ones((2, 2), dtype=np.float32))
    adata.var_names = ["GCG", "PPY"]
    table = pp.homology_table("human", "mouse")
    with pytest.warns(UserWarning, match=r"symbol matches \(e.g. PPY/Ppy\) were skipped.*context=") as record:
        pp.translate_genes(adata, table)
    assert record[0].filename == __file__
    assert adata.var.loc["GCG", "context_gene"] == "Gcg" and pd.isna(adata.var.loc["PPY", "context_gene"])
    mouse = ad.AnnData(np.ones((2, 2), dtype=np.float32))
    mouse.var_names = ["Gcg", "Ppy"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        pp.translate_genes(adata, table, context=mouse)  # with the context: no warning, PPY found
        assert adata.var.loc["PPY", "context_gene"] == "Ppy"
        pp.translate_genes(adata, table, match_symbols=False)  # the table alone, asked for: no warning


# --- setup_anndata warns on many genes -------------------------------------------------------------------------------
def _wide(n_genes: int, n_obs: int = 12) -> ad.AnnData:
    rng = np.random.default_rng(0)
    counts = sparse.random(n_obs, n_genes, density=0.01, format="csr", random_state=rng, dtype=np.float32)
    counts.data[:] = rng.integers(1, 5, counts.nnz)
    adata = ad.AnnData(counts)
    adata.var_names = [f"g{i}" for i in range(n_genes)]
    adata.obs["batch"] = pd.Categorical(["b0", "b1"] * (n_obs // 2))
    return adata


def _with_neighbors(adata: ad.AnnData) -> ad.AnnData:
    adata.obsm["homolog_neighbors"] = np.zeros((adata.n_obs, 3), dtype=np.int32)
    adata.obs["homolog_neighbors_agreement"] = 0.0
    adata.uns["homolog_neighbors_params"] = {"n_neighbors": 3}
    return adata


@pytest.mark.parametrize(
    ("model", "prepare"), [(speciesvi.ContextVI, lambda a: a), (speciesvi.TargetVI, _with_neighbors)]
)
def test_setup_anndata_warns_on_many_genes(model, prepare, caplog):
    with caplog.at_level(logging.WARNING, logger="speciesvi"):
        model.setup_anndata(prepare(_wide(MANY_GENES)), batch_key="batch")
    assert "select_genes" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="speciesvi"):
        model.setup_anndata(prepare(_wide(MANY_GENES + 1)), batch_key="batch")
    assert f"{model.__name__}.setup_anndata: {MANY_GENES + 1} genes" in caplog.text
    assert "speciesvi.pp.select_genes(target, context)" in caplog.text
