"""Property-based tests (hypothesis) of the public pre-processing, setup and transfer functions on odd inputs.

Random small AnnData objects -- empty, one cell, one gene, duplicated obs/var names, categorical columns with unused
categories, NaN labels, integer and float counts (some not counts at all), CSR/CSC/dense matrices and backed
``.h5ad`` files -- go through each function. Every example must either be handled or raise a ``ValueError`` or
``TypeError`` with a message (never a ``KeyError``/``IndexError``/... from deep inside), and the inputs must be
unchanged afterwards, apart from the keys a successful call is documented to write.

``EXAMPLES`` examples per function, derandomised (the same examples on every run), no deadline.
"""

from __future__ import annotations

import os
import tempfile
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import speciesvi

EXAMPLES = 50
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TARGET_GENES = [f"G{i}" for i in range(6)]
CONTEXT_GENES = [f"g{i}" for i in range(6)]  # the same symbols in lower case: paired by symbol
#: select_genes ranks genes with scanpy's seurat_v3 (a loess fit), which needs more genes and cells.
SELECT_GENES = ([f"G{i}" for i in range(30)], [f"g{i}" for i in range(30)])
ACCEPTED = (ValueError, TypeError)
SCVI_KEYS = {"obs": {"_scvi_batch", "_scvi_labels"}, "uns": {"_scvi_uuid", "_scvi_manager_uuid"}}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- strategies ------------------------------------------------------------------------------------------------------
def _rare(value: bool = True) -> st.SearchStrategy[bool]:
    """``value`` about one time in six (odd features are rare, so that most examples get deep into a function)."""
    return st.sampled_from([not value] * 5 + [value])


def _mostly(common: list, rare: list) -> st.SearchStrategy:
    """One of ``common`` five times as often as one of ``rare``."""
    return st.sampled_from(common * 5 * max(len(rare), 1) + rare * len(common))


@st.composite
def anndatas(draw, genes: list[str], cells: tuple[int, int] = (2, 6), min_genes: int = 2) -> tuple[ad.AnnData, str]:
    """A small AnnData with odd features, and how to store it: ``"dense"``, ``"csr"``, ``"csc"`` or ``"backed"``.

    Each odd feature is rare: no cells, one cell, no genes, one gene, a duplicated gene or cell name, a value that is
    not a count (NaN, negative, fractional), a missing label. Categorical columns may carry unused categories.
    """
    n_obs = draw(_mostly(list(range(cells[0], cells[1] + 1)), [0, 1]))
    n_vars = draw(_mostly(list(range(min_genes, len(genes) + 1)), [0, 1]))
    names = draw(st.permutations(genes))[:n_vars]
    if n_vars > 1 and draw(_rare()):
        names[-1] = names[0]
    dtype = draw(st.sampled_from([np.int32, np.int64, np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    means = rng.gamma(1.0, draw(_mostly([3.0, 10.0], [0.0, 0.2])), n_vars)  # rarely (almost) all zero
    counts = rng.poisson(means, (n_obs, n_vars)).astype(dtype)
    if counts.size and draw(_rare()):  # not counts: NaN, negative or fractional values
        bad = draw(st.sampled_from([np.nan, -1.0, 0.5] if counts.dtype.kind == "f" else [-1]))
        counts.flat[draw(st.integers(0, counts.size - 1))] = bad
    adata = ad.AnnData(counts)
    adata.var_names = names
    cells = [f"cell{i}" for i in range(n_obs)]
    if n_obs > 1 and draw(_rare()):
        cells[-1] = cells[0]
    adata.obs_names = cells
    batches = draw(st.lists(st.sampled_from(["b0", "b1"]), min_size=n_obs, max_size=n_obs))
    labels = draw(st.lists(st.sampled_from(["alpha", "beta", "gamma"]), min_size=n_obs, max_size=n_obs))
    if n_obs and draw(_rare()):
        labels[draw(st.integers(0, n_obs - 1))] = None
    unused = draw(st.booleans())
    adata.obs["batch"] = pd.Categorical(batches, categories=["b0", "b1", "b_unused"] if unused else None)
    if draw(st.booleans()):
        adata.obs["labels"] = pd.Categorical(labels, categories=["alpha", "beta", "gamma", "delta"] if unused else None)
    else:
        adata.obs["labels"] = pd.Series(labels, index=adata.obs_names, dtype=object).to_numpy()
    if draw(_rare()):
        adata.layers["counts"] = adata.X.copy()
    storage = draw(st.sampled_from(["dense", "csr", "csc", "backed"]))
    if storage in ("csr", "csc"):
        adata.X = sp.csr_matrix(adata.X) if storage == "csr" else sp.csc_matrix(adata.X)
    return adata, storage


@st.composite
def homology_tables(draw) -> pd.DataFrame | object:
    """Tidy homology tables over the gene pools: odd types, NaN symbols, missing columns, rarely not a table."""
    if draw(_rare()):
        return draw(st.sampled_from([None, {"target_gene": ["G0"]}, "table.csv"]))
    rows = draw(
        st.lists(
            st.tuples(
                _mostly(TARGET_GENES, ["G_absent", None]),
                _mostly(CONTEXT_GENES, ["g_absent", None]),
                _mostly(["one2one", "one2one", "one2many", "many2many"], ["ortholog_weird"]),
                st.one_of(st.none(), st.floats(0, 100), st.just("high")),
            ),
            max_size=10,
        )
    )
    table = pd.DataFrame(rows, columns=["target_gene", "context_gene", "homology_type", "score"])
    if draw(_rare()):
        table = table.drop(columns=draw(st.sampled_from(["homology_type", "score", "context_gene"])))
    return table


# -- inputs and their snapshots ----------------------------------------------------------------------------------------
@contextmanager
def stored(adata: ad.AnnData, storage: str) -> Iterator[ad.AnnData]:
    """``adata`` itself, or read back from an ``.h5ad`` file in backed mode (closed afterwards)."""
    if storage != "backed":
        yield adata
        return
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(folder) / "adata.h5ad"
        adata = adata.copy()
        for column in adata.obs.columns[
            [dtype is np.dtype(object) for dtype in adata.obs.dtypes]
        ]:  # h5ad stores missing strings as categories
            adata.obs[column] = pd.Categorical(adata.obs[column])
        adata.write_h5ad(path)
        backed = ad.read_h5ad(path, backed="r")
        try:
            yield backed
        finally:
            backed.file.close()


def snapshot(adata: ad.AnnData) -> ad.AnnData:
    """A deep, in-memory copy."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return adata.to_memory() if adata.isbacked else adata.copy()


def _matrix(matrix) -> tuple[str, np.ndarray]:
    return type(matrix).__name__, (matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix))


def assert_unchanged(before: ad.AnnData, adata: ad.AnnData, added: dict[str, set[str]] | None = None) -> None:
    """``adata`` equals the snapshot ``before``, except for new keys named in ``added`` (``obs``/``var``/...)."""
    after = snapshot(adata)
    added = added or {}
    kind_before, x_before = _matrix(before.X)
    kind_after, x_after = _matrix(after.X)
    assert kind_before == kind_after and x_before.dtype == x_after.dtype
    np.testing.assert_array_equal(x_before, x_after)
    for axis in ("obs", "var"):
        frame = getattr(after, axis)
        new = [c for c in frame.columns if c not in getattr(before, axis).columns]
        assert set(new) <= added.get(axis, set()), f"unexpected new {axis} columns {new}"
        pd.testing.assert_frame_equal(frame.drop(columns=new), getattr(before, axis))
    for mapping in ("uns", "obsm", "layers"):
        new = set(getattr(after, mapping)) - set(getattr(before, mapping))
        assert new <= added.get(mapping, set()), f"unexpected new {mapping} keys {new}"
        for key, value in getattr(before, mapping).items():
            _assert_equal_values(value, getattr(after, mapping)[key])


def _assert_equal_values(before, after) -> None:
    if isinstance(before, dict):
        assert before.keys() == after.keys()
        for key in before:
            _assert_equal_values(before[key], after[key])
    elif sp.issparse(before) or isinstance(before, np.ndarray):
        np.testing.assert_array_equal(_matrix(before)[1], _matrix(after)[1])
    elif isinstance(before, pd.DataFrame):
        pd.testing.assert_frame_equal(before, after)
    else:
        assert before == after or (before != before and after != after)


def call(function: Callable, *args, **kwargs) -> bool:
    """Run ``function``: ``True`` if it succeeded, ``False`` if it raised an accepted error that says something.

    An accepted error is a ``ValueError`` or ``TypeError`` raised by speciesvi's own code (its checks), so that
    the message names the problem in the user's terms, not in those of a library deep inside.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            function(*args, **kwargs)
        except Exception as error:
            message = f"{type(error).__name__}: {error}"
            if not isinstance(error, ACCEPTED):
                raise
            origin = traceback.extract_tb(error.__traceback__)[-1].filename
            assert f"{os.sep}speciesvi{os.sep}" in origin, f"{message} (raised in {origin})"
            assert len(str(error)) >= 20, f"uninformative {message!r}"
            event(message[:120])  # pytest --hypothesis-show-statistics lists every message
            return False
    event("handled")
    return True


# -- setup_anndata ---------------------------------------------------------------------------------------------------
@FUZZ
@given(
    data=anndatas(TARGET_GENES),
    layer=_mostly([None], ["counts", "missing"]),
    batch_key=_mostly([None, "batch"], ["missing"]),
    labels_key=_mostly([None, "labels"], ["missing"]),
)
def test_context_setup_anndata(data, layer, batch_key, labels_key):
    adata, storage = data
    with stored(adata, storage) as adata:
        before = snapshot(adata)
        ok = call(speciesvi.ContextVI.setup_anndata, adata, layer=layer, batch_key=batch_key, labels_key=labels_key)
        assert_unchanged(before, adata, SCVI_KEYS if ok else None)
        if ok:
            assert adata.n_obs > 0 and adata.n_vars > 0 and adata.var_names.is_unique
            assert labels_key is None or adata.obs[labels_key].notna().all()


@st.composite
def targets_with_neighbors(draw) -> tuple[ad.AnnData, str]:
    """Target AnnData carrying what homolog_neighbors writes; rarely a part is missing or the agreement has NaN."""
    adata, storage = draw(anndatas(TARGET_GENES))
    parts = {"obsm", "agreement", "params"}
    if draw(_rare()):
        parts.discard(draw(st.sampled_from(sorted(parts))))
    k = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if "obsm" in parts:
        adata.obsm["homolog_neighbors"] = rng.integers(-1, 6, (adata.n_obs, k)).astype(np.int32)
    if "agreement" in parts:
        agreement = rng.random(adata.n_obs)
        if adata.n_obs and draw(_rare()):
            agreement[0] = np.nan
        adata.obs["homolog_neighbors_agreement"] = agreement
    if "params" in parts:
        adata.uns["homolog_neighbors_params"] = {"labels_key": "labels", "n_neighbors": k}
    return adata, storage


@FUZZ
@given(data=targets_with_neighbors(), batch_key=_mostly([None, "batch"], ["missing"]))
def test_target_setup_anndata(data, batch_key):
    adata, storage = data
    with stored(adata, storage) as adata:
        before = snapshot(adata)
        ok = call(speciesvi.TargetVI.setup_anndata, adata, batch_key=batch_key)
        assert_unchanged(before, adata, SCVI_KEYS if ok else None)


# -- pre-processing ----------------------------------------------------------------------------------------------------
@FUZZ
@given(
    data=anndatas(TARGET_GENES),
    table=homology_tables(),
    context=st.none() | anndatas(CONTEXT_GENES),
    policy=_mostly(["one2one", "best"], ["greedy"]),
)
def test_translate_genes(data, table, context, policy):
    adata, storage = data
    table_before = table.copy() if isinstance(table, pd.DataFrame) else table
    context_adata = context[0] if context is not None else None
    context_before = snapshot(context_adata) if context_adata is not None else None
    with stored(adata, storage) as adata:
        before = snapshot(adata)
        ok = call(speciesvi.pp.translate_genes, adata, table, policy=policy, context=context_adata)
        added = {"var": {"context_gene", "homology_type"}, "uns": {"translate_genes_params"}}
        assert_unchanged(before, adata, added if ok else None)
        if ok:
            assert adata.var_names.is_unique
            mapped = adata.var["context_gene"].dropna()
            assert mapped.is_unique
            if context_adata is not None:
                assert mapped.isin(context_adata.var_names).all()
    if context_adata is not None:
        assert_unchanged(context_before, context_adata)
    if isinstance(table, pd.DataFrame):
        pd.testing.assert_frame_equal(table, table_before)


@st.composite
def translated_pairs(
    draw, genes: tuple[list[str], list[str]] = (TARGET_GENES, CONTEXT_GENES), cells=(2, 8), min_genes: int = 2
) -> tuple[ad.AnnData, str, ad.AnnData, str]:
    """A target with ``var["context_gene"]`` (random, partly missing) and a context."""
    target, target_storage = draw(anndatas(genes[0], cells, min_genes))
    context, context_storage = draw(anndatas(genes[1], cells, min_genes))
    if draw(_rare(False)):
        homologs = draw(st.permutations(genes[1]))[: target.n_vars]
        for i in range(target.n_vars):
            if draw(_rare()):  # no homolog, one absent from the context, or one shared with another target gene
                homologs[i] = draw(st.sampled_from([None, "g_absent", homologs[0]]))
        target.var["context_gene"] = homologs
    return target, target_storage, context, context_storage


@FUZZ
@given(
    data=translated_pairs(),
    labels_key=_mostly(["labels", "batch"], ["missing"]),
    n_neighbors=_mostly([1, 2], [0, 6, 2.0]),
    n_vote=_mostly([1], [0, 2]),
    n_top_genes=_mostly([None, 3, 4000], [0, 1]),
)
def test_homolog_neighbors(data, labels_key, n_neighbors, n_vote, n_top_genes):
    target, target_storage, context, context_storage = data
    with stored(target, target_storage) as target, stored(context, context_storage) as context:
        target_before, context_before = snapshot(target), snapshot(context)
        ok = call(
            speciesvi.pp.homolog_neighbors,
            target,
            context,
            labels_key=labels_key,
            n_neighbors=n_neighbors,
            n_vote=n_vote,
            n_top_genes=n_top_genes,
        )
        added = {
            "obsm": {"homolog_neighbors"},
            "obs": {"homolog_neighbors_label", "homolog_neighbors_agreement"},
            "uns": {"homolog_neighbors_params"},
        }
        assert_unchanged(target_before, target, added if ok else None)
        assert_unchanged(context_before, context)
        if ok:
            neighbors = target.obsm["homolog_neighbors"]
            assert neighbors.shape == (target.n_obs, n_neighbors)
            assert ((neighbors >= -1) & (neighbors < context.n_obs)).all()


@FUZZ
@given(
    frame=st.one_of(
        homology_tables().filter(lambda t: isinstance(t, pd.DataFrame)),
        st.builds(
            lambda n, cols: pd.DataFrame({c: ["INS", "Ins1", "one2one", None][:n] for c in cols}),
            st.integers(0, 4),
            st.lists(
                st.sampled_from(
                    ["Gene name", "Mouse gene name", "Mouse homology type", "human_symbol", "mouse_symbol", "Symbol"]
                ),
                unique=True,
                max_size=4,
            ),
        ),
    ),
    species=st.sampled_from([("human", "mouse"), ("mouse", "human"), ("human", "human"), ("human", "unicorn")]),
)
def test_homology_table_from_a_dataframe(frame, species):
    before = frame.copy()
    ok = call(speciesvi.pp.homology_table, *species, source=frame)
    pd.testing.assert_frame_equal(frame, before)
    if ok:
        table = speciesvi.pp.homology_table(*species, source=frame)
        assert list(table.columns) == ["target_gene", "context_gene", "homology_type", "score"]
        assert table[["target_gene", "context_gene"]].notna().all().all()


@pytest.mark.skipif(not hasattr(speciesvi.pp, "select_genes"), reason="speciesvi.pp.select_genes not there yet")
@FUZZ
@given(
    data=translated_pairs(SELECT_GENES, cells=(24, 32), min_genes=20),
    batch_key=_mostly([None, "batch"], ["missing"]),
    n_top_genes=_mostly([5, 10], [0, 100]),
    inplace=st.booleans(),
)
def test_select_genes(data, batch_key, n_top_genes, inplace):
    target, target_storage, context, context_storage = data
    # select_genes refuses, before scanpy's seurat_v3 loess sees them, the inputs that would crash the process
    # (1 cell, at most 3 varying genes in a batch, all-zero counts): they are generated here too.
    with stored(target, target_storage) as target, stored(context, context_storage) as context:
        target_before, context_before = snapshot(target), snapshot(context)
        ok = call(
            speciesvi.pp.select_genes,
            target,
            context,
            n_top_genes=n_top_genes,
            target_batch_key=batch_key,
            context_batch_key=batch_key,
            inplace=inplace,
        )
        if not ok or not inplace:
            assert_unchanged(target_before, target)
            assert_unchanged(context_before, context)
        else:  # subset in place: the genes kept, in their order, and the parameters
            for adata, before in ((target, target_before), (context, context_before)):
                assert list(adata.var_names) == [g for g in before.var_names if g in set(adata.var_names)]
                assert "select_genes_params" in adata.uns


# -- transfer tools ----------------------------------------------------------------------------------------------------
@FUZZ
@given(
    data=translated_pairs(),
    labels_key=_mostly(["labels", "batch"], ["missing", 3]),
    cell_types=_mostly([None], ["alpha", ("alpha", "delta"), ()]),
    eps=_mostly([1e-6], [0.0, -1.0]),
)
def test_pseudobulk_lfc(data, labels_key, cell_types, eps):
    target, target_storage, context, context_storage = data
    with stored(target, target_storage) as target, stored(context, context_storage) as context:
        target_before, context_before = snapshot(target), snapshot(context)
        ok = call(speciesvi.tl.pseudobulk_lfc, target, context, labels_key, cell_types=cell_types, eps=eps)
        assert_unchanged(target_before, target)
        assert_unchanged(context_before, context)
        if ok:
            table = speciesvi.tl.pseudobulk_lfc(target, context, labels_key, cell_types=cell_types, eps=eps)
            assert len(table) > 0


labels = _mostly(["a", "b", "c"], [None, np.nan, 3])


@FUZZ
@given(
    neighbor_labels=st.one_of(
        _mostly([1, 3], [0]).flatmap(lambda k: st.lists(st.lists(labels, min_size=k, max_size=k), max_size=5)),
        st.lists(labels, max_size=4),  # not a (cells, k) table
    )
)
def test_vote(neighbor_labels):
    before = repr(neighbor_labels)
    ok = call(speciesvi.tl.vote, neighbor_labels)
    assert repr(neighbor_labels) == before
    if ok:
        winners, share = speciesvi.tl.vote(neighbor_labels)
        assert len(winners) == len(neighbor_labels) and ((share >= 0) & (share <= 1)).all()


def _lists_of_about(n: int, elements: st.SearchStrategy) -> st.SearchStrategy[list]:
    """Lists of ``n`` elements, rarely one more."""
    return _mostly([n], [n + 1]).flatmap(lambda size: st.lists(elements, min_size=size, max_size=size))


@FUZZ
@given(
    data=st.integers(0, 6).flatmap(
        lambda n: st.tuples(
            st.lists(labels, min_size=n, max_size=n),
            _lists_of_about(n, _mostly([0, 1, "c2"], [None])),
        )
    ),
    min_prop=_mostly([0.0, 0.5, 1.0], [1.5]),
    series=st.booleans(),
)
def test_majority_voting(data, min_prop, series):
    cell_labels, clusters = data
    if series:
        cell_labels = pd.Series(cell_labels, dtype=object)
        clusters = pd.Categorical(clusters)
    before = (repr(cell_labels), repr(clusters))
    ok = call(speciesvi.tl.majority_voting, cell_labels, clusters, min_prop=min_prop)
    assert (repr(cell_labels), repr(clusters)) == before
    if ok:
        assert len(speciesvi.tl.majority_voting(cell_labels, clusters, min_prop=min_prop)) == len(clusters)


@FUZZ
@given(
    data=st.integers(0, 6).flatmap(
        lambda n: st.tuples(
            st.lists(labels, min_size=n, max_size=n),
            _lists_of_about(n, _mostly(["a", "b", "Unassigned"], [None])),
        )
    ),
    reference=st.none() | st.lists(labels, max_size=4),
    min_cells=_mostly([1, 2], [0]),
)
def test_evaluate_labels(data, reference, min_cells):
    true, predicted = data
    before = repr((true, predicted, reference))
    ok = call(speciesvi.tl.evaluate_labels, true, predicted, reference=reference, min_cells=min_cells)
    assert repr((true, predicted, reference)) == before
    if ok:
        result = speciesvi.tl.evaluate_labels(true, predicted, reference=reference, min_cells=min_cells)
        assert np.isnan(result.balanced_accuracy) or 0 <= result.balanced_accuracy <= 1


@FUZZ
@given(
    values=hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=5),
        elements=st.floats(allow_nan=True, allow_infinity=True, width=32),
    ),
    bins=_mostly(["auto", 1, 5], [0, "nonsense"]),
)
def test_histogram_mode(values, bins):
    before = values.copy()
    ok = call(speciesvi.tl.histogram_mode, values, bins=bins)
    np.testing.assert_array_equal(values, before)
    if ok:
        mode = speciesvi.tl.histogram_mode(values, bins=bins)
        finite = values[np.isfinite(values)]
        assert np.isnan(mode) if finite.size == 0 else finite.min() <= mode <= finite.max()
