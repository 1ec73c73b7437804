"""The plots draw what they are given, write PNGs, and refuse malformed input."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import speciesvi


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_confusion_heatmap_annotates_rows_and_saves(tmp_path):
    truth = ["A"] * 4 + ["B"] * 4
    predicted = ["A", "A", "A", "B", "B", "B", "B", "B"]
    evaluation = speciesvi.tl.evaluate_labels(truth, predicted, reference=["A", "B"])
    ax = speciesvi.pl.confusion_heatmap(
        evaluation.confusion, balanced_accuracy=evaluation.balanced_accuracy, save=tmp_path / "c.png"
    )
    assert (tmp_path / "c.png").stat().st_size > 1000
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == ["100", "25", "75"]
    assert "0.875" in ax.get_title()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["A", "B"]


def test_similarity_heatmap_marks_the_two_best_matches_per_row():
    table = pd.DataFrame([[1.0, 5.0, 3.0], [9.0, 2.0, 0.5]], index=["x", "y"], columns=["a", "b", "c"])
    ax = speciesvi.pl.similarity_heatmap(table)
    marks = {(int(round(t.get_position()[1])), int(round(t.get_position()[0]))): t.get_text() for t in ax.texts}
    assert marks == {(0, 0): "●", (0, 2): "○", (1, 2): "●", (1, 1): "○"}
    with pytest.raises(ValueError, match="mark_top"):
        speciesvi.pl.similarity_heatmap(table, mark_top=-1)


def test_cell_similarity_colours_scored_cells_and_marks_the_target(tmp_path):
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(50, 2))
    similarity = np.linspace(0, 100, 50)
    similarity[:5] = np.nan
    ax = speciesvi.pl.cell_similarity(coords, similarity, target_coordinates=[0, 0], save=tmp_path / "s.png")
    grey, scored, star = ax.collections[:3]
    assert len(grey.get_offsets()) == 5 and len(scored.get_offsets()) == 45 and len(star.get_offsets()) == 1
    assert scored.get_array()[-1] == pytest.approx(similarity[5])  # most similar cell drawn on top
    with pytest.raises(ValueError, match="one value per context cell"):
        speciesvi.pl.cell_similarity(coords, similarity[:10])


def test_transfer_accuracy_draws_one_bar_per_method_and_k():
    accuracy = {"data level": {5: 0.8, 25: 0.82}, "speciesvi": {5: 0.85, 25: 0.9}}
    ax = speciesvi.pl.transfer_accuracy(accuracy)
    assert len(ax.patches) == 4
    assert sorted(round(p.get_height(), 2) for p in ax.patches) == [0.8, 0.82, 0.85, 0.9]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        speciesvi.pl.transfer_accuracy({"m": {5: 1.5}})


def test_lfc_vs_pseudobulk_correlates_the_expressed_pairs_per_type():
    rng = np.random.default_rng(0)
    n = 40
    keys = pd.DataFrame(
        {
            "cell_type": ["A"] * n + ["B"] * n,
            "gene_target": [f"G{i}" for i in range(n)] * 2,
            "gene_context": [f"g{i}" for i in range(n)] * 2,
        }
    )
    data_lfc = rng.normal(size=2 * n)
    model = keys.assign(lfc=data_lfc + rng.normal(scale=0.1, size=2 * n))
    expression = np.where(np.arange(2 * n) % n < 30, 1e-2, 1e-6)  # 10 pairs per type are not expressed
    bulk = keys.assign(lfc=data_lfc, expression_target=expression, expression_context=expression)
    fig = speciesvi.pl.lfc_vs_pseudobulk(model, bulk)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert len(titles) == 2 and all("(30 pairs)" in t for t in titles)
    assert all(float(t.split("Spearman ")[1].split()[0]) > 0.9 for t in titles)
    with pytest.raises(TypeError, match="columns"):
        speciesvi.pl.lfc_vs_pseudobulk(model.drop(columns="lfc"), bulk)


def test_training_history_draws_the_logged_curves(trained_context, tmp_path):
    fig = speciesvi.pl.training_history(trained_context, save=tmp_path / "h.png")
    assert (tmp_path / "h.png").is_file()
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert "negative ELBO" in labels and "alignment term" not in labels
    elbo = fig.axes[labels.index("negative ELBO")].lines[0].get_ydata()
    assert len(elbo) == 15 and elbo[-1] < elbo[0]
    with pytest.raises(ValueError, match="train it first"):
        speciesvi.pl.training_history(object())
