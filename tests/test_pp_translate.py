from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import speciesvi.pp as pp


def _adata(genes: list[str]) -> ad.AnnData:
    adata = ad.AnnData(np.ones((3, len(genes)), dtype=np.float32))
    adata.var_names = genes
    return adata


TABLE = pd.DataFrame(
    {
        "target_gene": ["GCG", "INS", "INS", "AMY2A", "AMY2A", "AMY2B", "AMY2B", "SST", "DUP", "DUP2"],
        "context_gene": ["Gcg", "Ins1", "Ins2", "Amy2a5", "Amy2b", "Amy2a5", "Amy2b", "Sst", "Dupx", "Dupx"],
        "homology_type": [
            "one2one",
            "one2many",
            "one2many",
            "many2many",
            "many2many",
            "many2many",
            "many2many",
            "one2one",
            "one2one",
            "one2one",
        ],
        "score": [100, 10, 90, 50, 80, 70, 60, 100, 100, 100],
    }
)


def test_one2one_policy():
    adata = _adata(["GCG", "INS", "AMY2A", "AMY2B", "SST", "DUP", "DUP2", "NOHOMOLOG"])
    pp.translate_genes(adata, TABLE)
    assert adata.var.loc["GCG", "context_gene"] == "Gcg" and adata.var.loc["SST", "context_gene"] == "Sst"
    # DUP / DUP2 claim the same context gene under "one2one": ambiguous, both dropped
    assert adata.var["context_gene"].notna().tolist() == [True, False, False, False, True, False, False, False]
    assert adata.var.loc["GCG", "homology_type"] == "one2one"
    assert pd.isna(adata.var.loc["NOHOMOLOG", "homology_type"])
    assert adata.uns["translate_genes_params"]["policy"] == "one2one"


def test_best_policy_is_one_to_one_and_prefers_scores():
    adata = _adata(["GCG", "INS", "AMY2A", "AMY2B", "SST", "DUP", "DUP2", "NOHOMOLOG"])
    pp.translate_genes(adata, TABLE, policy="best")
    mapped = adata.var["context_gene"]
    assert mapped["INS"] == "Ins2"  # score 90 beats 10
    # many2many: AMY2A's best is Amy2b (80); then AMY2B gets the remaining Amy2a5
    assert mapped["AMY2A"] == "Amy2b" and mapped["AMY2B"] == "Amy2a5"
    assert mapped["DUP"] == "Dupx" and pd.isna(mapped["DUP2"])  # first in table order wins, no reuse
    assert mapped.dropna().is_unique
    assert adata.var.loc["INS", "homology_type"] == "one2many"


def test_symbols_match_exactly_not_by_case():
    adata = _adata(["gcg", "Ins1", "SST"])
    pp.translate_genes(adata, TABLE)
    assert adata.var["context_gene"].isna().tolist() == [True, True, False]


def test_restriction_to_context_genes():
    adata = _adata(["INS", "GCG", "SST"])
    context = _adata(["Ins1", "Gcg", "Other"])
    pp.translate_genes(adata, TABLE, policy="best", context=context)
    # Ins2 (better score) is not measured in the context, so INS maps to Ins1; SST's homolog is absent
    assert adata.var["context_gene"].tolist()[:2] == ["Ins1", "Gcg"]
    assert pd.isna(adata.var["context_gene"].iloc[2])
    assert adata.uns["translate_genes_params"]["restricted_to_context"] is True


def test_coverage_is_logged(caplog):
    adata = _adata(["GCG", "SST", "X1", "X2"])
    with caplog.at_level(logging.INFO, logger="speciesvi.pp"):
        pp.translate_genes(adata, TABLE)
    assert "2 of 4 target genes (50.0%) have a context homolog" in caplog.text


def test_real_offline_table_on_baron_like_symbols():
    adata = _adata(["INS", "GCG", "SST", "PPY", "KRT19", "MT-CO1"])
    pp.translate_genes(adata, pp.homology_table("human", "mouse"))
    mapped = adata.var["context_gene"]
    assert mapped["GCG"] == "Gcg" and mapped["SST"] == "Sst" and mapped["MT-CO1"] == "mt-Co1"
    assert pd.isna(mapped["INS"])  # one2many: not under the default policy


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"table": pd.DataFrame({"a": ["GCG"], "b": ["Gcg"]})}, "columns 'target_gene', 'context_gene'"),
        ({"table": TABLE, "policy": "all"}, "policy must be"),
        (
            {"table": TABLE.assign(homology_type="ortholog_one2one")},
            "unknown homology types",
        ),
    ],
)
def test_bad_arguments_leave_adata_untouched(kwargs, message):
    adata = _adata(["GCG", "SST"])
    before = adata.copy()
    with pytest.raises(ValueError, match=message):
        pp.translate_genes(adata, **kwargs)
    assert adata.var.equals(before.var) and adata.uns.keys() == before.uns.keys()


def test_duplicated_var_names_are_an_error():
    adata = _adata(["GCG", "GCG", "SST"])
    before = adata.var.copy()
    with pytest.raises(ValueError, match="duplicated gene names.*var_names_make_unique"):
        pp.translate_genes(adata, TABLE)
    assert adata.var.equals(before)
    context = _adata(["Gcg", "Gcg"])
    target = _adata(["GCG"])
    with pytest.raises(ValueError, match="context.var_names has 1 duplicated"):
        pp.translate_genes(target, TABLE, context=context)
    assert "context_gene" not in target.var


def test_symbol_match_pairs_genes_the_table_misses():
    adata = _adata(["GCG", "PPY", "OLDNAME", "SST", "TWIN", "twin"])
    context = _adata(["Gcg", "Ppy", "Oldname", "Sst", "Twin"])
    table = TABLE.assign(context_gene=TABLE["context_gene"].replace({"Sst": "Oldname"}))
    pp.translate_genes(adata, table, context=context)
    var = adata.var
    assert var.loc["PPY", "context_gene"] == "Ppy" and var.loc["PPY", "homology_type"] == "symbol"
    assert var.loc["GCG", "homology_type"] == "one2one"
    # Oldname is the table's homolog of SST, so OLDNAME may not take it by symbol
    assert var.loc["SST", "context_gene"] == "Oldname" and pd.isna(var.loc["OLDNAME", "context_gene"])
    # TWIN and twin both match Twin: ambiguous, neither is paired
    assert var.loc[["TWIN", "twin"], "context_gene"].isna().all()
    assert adata.uns["translate_genes_params"]["match_symbols"] is True
    assert var["context_gene"].dropna().is_unique

    pp.translate_genes(adata, table, context=context, match_symbols=False)
    assert pd.isna(adata.var.loc["PPY", "context_gene"])
    assert adata.uns["translate_genes_params"]["match_symbols"] is False
    with pytest.raises(TypeError, match="match_symbols"):
        pp.translate_genes(adata, table, context=context, match_symbols="yes")


def test_symbol_rule_agrees_with_the_bundled_table():
    """The docstring's justification: equal symbols (ignoring case) are the table's own pairs 99.7 % of the time."""
    table = pp.homology_table("human", "mouse")
    pairs = set(zip(table["target_gene"], table["context_gene"], strict=True))
    mouse_by_upper: dict[str, set[str]] = {}
    for gene in table["context_gene"].unique():
        mouse_by_upper.setdefault(gene.upper(), set()).add(gene)
    matched = [g for g in table["target_gene"].unique() if g in mouse_by_upper]
    agree = sum(any((g, m) in pairs for m in mouse_by_upper[g]) for g in matched)
    assert len(matched) > 15000
    assert agree / len(matched) > 0.99
