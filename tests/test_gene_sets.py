"""tl.read_gmt, tl.gene_set_lfc and pl.gene_set_lfc: homolog fold changes summarised per gene set."""

import gzip
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
import scvi
from test_lfc import DOWN, THINNED, THINNED_LFC, UNTOUCHED, UP, species_with_specific_genes
from test_similarity import N_SHARED, train_pair

import speciesvi
from speciesvi.tl import GENE_SET_COLUMNS

matplotlib.use("Agg")

GMT = Path(__file__).parent / "data" / "pancreas_small.gmt"
N_PAIRS = 400
#: Hand-made table: pairs 0-9 strongly higher in the target, 10-19 unchanged; the rest flagged at random.
CHANGED, UNCHANGED = range(0, 10), range(10, 20)


def hand_made_table(seed: int = 0, cell_types=("alpha", "beta")) -> pd.DataFrame:
    """An LFC table with known answers: 20 % of the other pairs flagged, 1 % flagged on the null."""
    rng = np.random.default_rng(seed)
    frames = []
    for cell_type in cell_types:
        lfc = rng.normal(0.0, 0.5, N_PAIRS)
        p = np.where(rng.random(N_PAIRS) < 0.2, 0.95, 0.1)
        lfc[list(CHANGED)], p[list(CHANGED)] = 3.0, 0.99
        lfc[list(UNCHANGED)], p[list(UNCHANGED)] = 0.0, 0.0
        frames.append(
            pd.DataFrame(
                {
                    "cell_type": cell_type,
                    "gene_target": [f"G{i}" for i in range(N_PAIRS)],
                    "gene_context": [f"g{i}" for i in range(N_PAIRS)],
                    "lfc": lfc,
                    "p": p,
                    "lfc_null": rng.normal(0.0, 0.3, N_PAIRS),
                    "p_null": np.where(rng.random(N_PAIRS) < 0.01, 0.95, 0.0),
                    "rho_target": rng.dirichlet(np.ones(N_PAIRS)),
                    "rho_context": rng.dirichlet(np.ones(N_PAIRS)),
                }
            )
        )
    table = pd.concat(frames, ignore_index=True)
    table["cell_type"] = pd.Categorical(table["cell_type"], categories=list(cell_types))
    return table


# -- GMT files ---------------------------------------------------------------------------------------
def test_read_gmt_of_the_shipped_file():
    sets = speciesvi.tl.read_gmt(GMT)
    assert len(sets) == 10
    assert sets["PANCREAS_INSULIN_SECRETION"][:3] == ["INS", "IAPP", "PCSK1"]
    assert all(len(genes) >= 15 for genes in sets.values())
    assert speciesvi.tl.read_gmt(str(GMT)) == sets  # str paths too


def test_read_gmt_skips_comments_and_blank_lines_and_cleans_genes(tmp_path):
    path = tmp_path / "sets.gmt"
    path.write_text("# a comment\n\nA\tdesc\tX\tY\tX\t\t\r\nB\thttp://x\tZ,1.0\tW,0.5\n")
    assert speciesvi.tl.read_gmt(path) == {"A": ["X", "Y"], "B": ["Z", "W"]}
    packed = tmp_path / "sets.gmt.gz"
    with gzip.open(packed, "wt") as handle:
        handle.write("A\tdesc\tX\tY\n")
    assert speciesvi.tl.read_gmt(packed) == {"A": ["X", "Y"]}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("A\tdesc\tX\nB desc X Y\n", "line 2: a GMT line needs at least three tab-separated fields"),
        ("A\tdesc\tX\n# c\nB\tdesc\n", "line 3: a GMT line needs at least three"),
        ("\tdesc\tX\n", "line 1: the gene-set name"),
        ("A\tdesc\t\t\n", "line 1: gene set 'A' lists no genes"),
        ("A\tdesc\tX\nA\tdesc\tY\n", "line 2: gene set 'A' was already defined on line 1"),
        ("# only a comment\n", "holds no gene set"),
    ],
)
def test_read_gmt_names_the_malformed_line(tmp_path, text, match):
    path = tmp_path / "bad.gmt"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        speciesvi.tl.read_gmt(path)


def test_read_gmt_missing_file(tmp_path):
    with pytest.raises(ValueError, match="No GMT file"):
        speciesvi.tl.read_gmt(tmp_path / "missing.gmt")


# -- gene_set_lfc on a hand-made table ---------------------------------------------------------------
def test_known_answers_of_changed_and_unchanged_sets():
    table = hand_made_table()
    sets = {
        "changed": [f"G{i}" for i in CHANGED],
        "unchanged": [f"G{i}" for i in UNCHANGED] + ["NOT_THERE"],
    }
    result = speciesvi.tl.gene_set_lfc(table, sets)
    assert list(result.columns) == list(GENE_SET_COLUMNS)
    assert list(result["cell_type"].cat.categories) == ["alpha", "beta"] and len(result) == 4
    for cell_type, rows in result.groupby("cell_type", observed=True):
        rows = rows.set_index("gene_set")
        changed, unchanged = rows.loc["changed"], rows.loc["unchanged"]
        assert changed["n_genes"] == 10 and changed["n_set"] == 10
        assert changed["lfc_median"] == pytest.approx(3.0) and changed["share"] == 1.0
        assert changed["share_up"] == 1.0 and changed["share_down"] == 0.0
        assert changed["pval"] < 1e-6 and changed["pval_enrichment"] < 1e-3 and changed["padj_enrichment"] < 0.01
        assert unchanged["n_genes"] == 10 and unchanged["n_set"] == 11
        assert unchanged["lfc_median"] == 0.0 and unchanged["share"] == 0.0
        assert unchanged["pval"] == 1.0 and unchanged["pval_enrichment"] == 1.0
        # the flagged rate of like-abundance pairs: near the 20 % drawn (the changed set raises its classes)
        assert 0.1 < unchanged["rate_background"] < 0.4
        assert rows.index[0] == "changed", cell_type  # sorted by pval_enrichment
        assert changed["excess"] == pytest.approx(changed["share"] - changed["share_null"])
    assert result.set_index("gene_set").loc["changed", "top_genes"].iloc[0].count(",") == 4
    params = result.attrs["params"]
    assert params["gene_key"] == "gene_target" and params["min_genes"] == 5 and params["n_gene_sets_kept"] == 2


def test_species_picks_the_gene_column():
    table = hand_made_table()
    sets = {"changed": [f"g{i}" for i in CHANGED]}  # context symbols
    result = speciesvi.tl.gene_set_lfc(table, sets, species="context")
    assert (result["share"] == 1.0).all() and (result["lfc_median"] == 3.0).all()
    assert result.attrs["params"]["gene_key"] == "gene_context"
    with pytest.raises(ValueError, match="species='context'"):  # the target column does not hold them
        speciesvi.tl.gene_set_lfc(table, sets, species="target")
    by_key = speciesvi.tl.gene_set_lfc(table, sets, gene_key="gene_context")
    pd.testing.assert_frame_equal(by_key, result)


def test_min_genes_filters_small_sets():
    table = hand_made_table()
    sets = {"three": ["G0", "G1", "G2"], "six": [f"G{i}" for i in range(20, 26)]}
    assert set(speciesvi.tl.gene_set_lfc(table, sets)["gene_set"]) == {"six"}
    assert set(speciesvi.tl.gene_set_lfc(table, sets, min_genes=3)["gene_set"]) == {"three", "six"}
    with pytest.raises(ValueError, match="No gene set has 7 or more genes"):
        speciesvi.tl.gene_set_lfc(table, sets, min_genes=7)


def test_a_gmt_path_works_as_gene_sets(tmp_path):
    path = tmp_path / "sets.gmt"
    path.write_text("changed\tdesc\t" + "\t".join(f"G{i}" for i in CHANGED) + "\n")
    result = speciesvi.tl.gene_set_lfc(hand_made_table(), path)
    assert list(result["gene_set"]) == ["changed", "changed"]


def test_the_null_flags_few_random_sets():
    """Random gene sets on the hand-made table: the null test flags about alpha or fewer of them."""
    rng = np.random.default_rng(1)
    table = hand_made_table(seed=2, cell_types=("alpha", "beta", "gamma", "delta"))
    sets = {f"random_{i}": [f"G{j}" for j in rng.choice(np.arange(20, N_PAIRS), 15, replace=False)] for i in range(50)}
    result = speciesvi.tl.gene_set_lfc(table, sets)
    assert len(result) == 200
    assert (result["pval_null"] < 0.05).mean() <= 0.05
    assert (result["padj_enrichment"] < 0.05).mean() <= 0.05  # random sets are not enriched either
    # but their genes differ far more often than on the null (a set of 15 holds 0 or 1 of the 20 % in 17 % of draws)
    assert (result["pval"] < 0.05).mean() > 0.6


def test_without_abundance_columns_one_class(caplog):
    table = hand_made_table().drop(columns=["rho_target", "rho_context"])
    with caplog.at_level("WARNING", logger="speciesvi.tl._gene_sets"):
        result = speciesvi.tl.gene_set_lfc(table, {"changed": [f"G{i}" for i in CHANGED]})
    assert "not abundance matched" in caplog.text
    assert result["rate_null"].nunique() == 2  # one rate per cell type


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"lfc_table": "table.csv"}, TypeError, "DataFrame from TargetVI.homolog_lfc"),
        ({"lfc_table": pd.DataFrame({"cell_type": ["a"]})}, ValueError, "lacks the columns"),
        ({"gene_sets": ["G0", "G1"]}, TypeError, "dict of gene-set name"),
        ({"gene_sets": {"s": "G0"}}, TypeError, "list of gene symbols"),
        ({"gene_sets": {}}, ValueError, "gene_sets is empty"),
        ({"species": "mouse"}, ValueError, "species must be 'target' or 'context'"),
        ({"gene_key": "symbol"}, ValueError, "not a column"),
        ({"p_threshold": 1.5}, ValueError, "p_threshold"),
        ({"min_genes": 0}, ValueError, "min_genes must be a positive integer"),
        ({"n_abundance_classes": 0}, ValueError, "n_abundance_classes"),
    ],
)
def test_bad_inputs_are_refused(kwargs, error, match):
    arguments = {"lfc_table": hand_made_table(), "gene_sets": {"changed": [f"G{i}" for i in CHANGED]}, **kwargs}
    with pytest.raises(error, match=match):
        speciesvi.tl.gene_set_lfc(**arguments)


# -- the plot ----------------------------------------------------------------------------------------
def test_gene_set_plot(tmp_path):
    sets = {"changed": [f"G{i}" for i in CHANGED], "other": [f"G{i}" for i in range(20, 40)]}
    result = speciesvi.tl.gene_set_lfc(hand_made_table(), sets)
    ax = speciesvi.pl.gene_set_lfc(result, n_top=1, target_name="human", context_name="mouse", save=tmp_path / "g.png")
    assert isinstance(ax, matplotlib.axes.Axes) and (tmp_path / "g.png").stat().st_size > 0
    assert [t.get_text() for t in ax.get_yticklabels()] == ["changed"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["alpha", "beta"]
    ax = speciesvi.pl.gene_set_lfc(result, "beta", rank_by="lfc_median", n_top=2)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["changed", "other"]
    with pytest.raises(ValueError, match="rank_by"):
        speciesvi.pl.gene_set_lfc(result, rank_by="nope")
    with pytest.raises(ValueError, match="not in the table"):
        speciesvi.pl.gene_set_lfc(result, "gamma")
    with pytest.raises(TypeError, match="gene_set_lfc"):
        speciesvi.pl.gene_set_lfc(hand_made_table())
    matplotlib.pyplot.close("all")


# -- on a real homolog_lfc result of the synthetic model ---------------------------------------------
@pytest.fixture(scope="module")
def synthetic_lfc():
    scvi.settings.seed = 0
    context, target = species_with_specific_genes()
    model = train_pair(context, target)
    return model.homolog_lfc(labels_key="labels", n_samples=3000, progress_bar=False, random_state=0)


@pytest.mark.usefixtures("one_torch_thread")
def test_synthetic_model_changed_set_stands_out_and_the_null_flags_few_sets(synthetic_lfc):
    rng = np.random.default_rng(0)
    strong = THINNED[THINNED_LFC <= -2]
    sets = {
        "changed": [f"TGT_{i}" for i in [UP, DOWN, *strong]],
        "untouched": [f"TGT_{i}" for i in UNTOUCHED],
        **{f"random_{i}": [f"TGT_{j}" for j in rng.choice(N_SHARED, 8, replace=False)] for i in range(40)},
    }
    result = speciesvi.tl.gene_set_lfc(synthetic_lfc, sets)
    assert set(result["cell_type"].cat.categories) == {"alpha", "beta", "gamma"}
    assert len(result) == 3 * len(sets)
    for cell_type, rows in result.groupby("cell_type", observed=True):
        rows = rows.set_index("gene_set")
        changed, untouched = rows.loc["changed"], rows.loc["untouched"]
        assert changed["share"] >= 0.75 and changed["pval"] < 1e-3, cell_type
        assert changed["pval_enrichment"] < 0.05, cell_type
        assert untouched["share"] <= 0.2 and abs(untouched["lfc_median"]) < 0.5, cell_type
    # the null's share of flagged sets
    assert (result["pval_null"] < 0.05).mean() <= 0.05
    assert (result["share_null"] > 0).mean() < 0.5
