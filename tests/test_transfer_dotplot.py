"""speciesvi.pl.transfer_dotplot: dot size is the share of a cluster's cells with a label, colour their mean."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import speciesvi
from speciesvi.pl._dotplot import dotplot_table


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def adata():
    adata = ad.AnnData(np.zeros((7, 1), dtype=np.float32))
    adata.obs["sv_type"] = ["a", "a", "b", "b", "Unassigned", "a", "a|b"]
    adata.obs["sv_type_confidence"] = [0.9, 0.7, 0.5, 0.3, 0.1, 1.0, 0.2]
    adata.obs["cluster"] = pd.Categorical(["10", "10", "10", "2", "2", "2", "2"], categories=["2", "10"])
    adata.obsm["sv_type_probabilities"] = np.array(
        [[1, 0], [0.8, 0.2], [0.4, 0.6], [0, 1], [0.5, 0.5], [1, 0], [0.5, 0.5]], dtype=np.float32
    )
    adata.uns["sv_params"] = {"label_order": {"type": ["a", "b"]}}
    return adata


def _dots(ax) -> dict[tuple[str, str], tuple[float, float]]:
    """(cluster, label) -> (marker area, colour value) of every drawn dot (grey dots: NaN colour)."""
    xs = [t.get_text() for t in ax.get_xticklabels()]
    ys = [t.get_text() for t in ax.get_yticklabels()]
    grey, coloured = ax.collections[:2]
    found = {}
    for collection, values in ((grey, None), (coloured, coloured.get_array())):
        sizes = np.broadcast_to(collection.get_sizes(), len(collection.get_offsets()))
        for i, (x, y) in enumerate(collection.get_offsets()):
            found[(ys[int(y)], xs[int(x)])] = (sizes[i], np.nan if values is None else float(values[i]))
    return found


def test_dot_sizes_are_cluster_shares_and_colours_mean_confidence(adata, tmp_path):
    ax = speciesvi.pl.transfer_dotplot(adata, key="sv_type", groupby="cluster", dot_max=100.0, save=tmp_path / "d.png")
    assert (tmp_path / "d.png").stat().st_size > 1000
    assert [t.get_text() for t in ax.get_yticklabels()] == ["2", "10"]  # the clustering's own order
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "a|b", "b", "Unassigned"]
    dots = _dots(ax)
    assert set(dots) == {("10", "a"), ("10", "b"), ("2", "a"), ("2", "a|b"), ("2", "b"), ("2", "Unassigned")}
    assert dots[("10", "a")] == pytest.approx((100 * 2 / 3, 0.8))
    assert dots[("2", "b")] == pytest.approx((25.0, 0.3))
    assert dots[("2", "Unassigned")] == pytest.approx((25.0, 0.1))


def test_probability_colours_average_over_the_whole_cluster(adata):
    ax = speciesvi.pl.transfer_dotplot(adata, key="sv_type", groupby="cluster", color="probability", dot_max=100.0)
    dots = _dots(ax)
    assert dots[("10", "a")] == pytest.approx((100 * 2 / 3, (1 + 0.8 + 0.4) / 3))
    assert dots[("2", "b")] == pytest.approx((25.0, (1 + 0.5 + 0 + 0.5) / 4))
    assert np.isnan(dots[("2", "Unassigned")][1]) and np.isnan(dots[("2", "a|b")][1])  # no column: grey


def test_chosen_labels_and_table():
    share, mean = dotplot_table(["a", "a", "b"], ["0", "0", "1"], np.array([0.2, 0.4, 0.9]))
    assert share.loc["0", "a"] == 1.0 and share.loc["1", "b"] == 1.0 and share.loc["0", "b"] == 0.0
    assert mean.loc["0", "a"] == pytest.approx(0.3) and np.isnan(mean.loc["0", "b"])
    with pytest.raises(ValueError, match="missing"):
        dotplot_table(["a", None], ["0", "0"], np.ones(2))


def test_bad_inputs_say_what_to_pass(adata):
    ax = speciesvi.pl.transfer_dotplot(adata, key="sv_type", groupby="cluster", labels=["b", "a", "c"])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["b", "a", "c"]
    with pytest.raises(ValueError, match="no column 'nope'.*transfer_labels"):
        speciesvi.pl.transfer_dotplot(adata, key="nope", groupby="cluster")
    with pytest.raises(ValueError, match="no column 'leiden'.*clusters"):
        speciesvi.pl.transfer_dotplot(adata, key="sv_type", groupby="leiden")
    with pytest.raises(ValueError, match="confidence_key="):
        speciesvi.pl.transfer_dotplot(adata, key="sv_type", groupby="cluster", confidence_key="conf")
    with pytest.raises(ValueError, match="color must be"):
        speciesvi.pl.transfer_dotplot(adata, key="sv_type", groupby="cluster", color="mean")
    del adata.uns["sv_params"]
    with pytest.raises(ValueError, match="No label order"):
        speciesvi.pl.transfer_dotplot(adata, key="sv_type", groupby="cluster", color="probability")
