"""homology_table for any species pair: NCBI taxon ids, MyGene.info beyond the named species, Ensembl BioMart exports
of any pair, OrthoFinder and eggNOG-mapper files (golden hamster <-> mouse, the scSpecies liver tutorial's pair)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import speciesvi.pp as pp
from speciesvi.pp import _mygene
from speciesvi.pp._species import label_taxid, resolve_species

FIXTURES = Path(__file__).parent / "data" / "pp"
ORTHOFINDER = (
    FIXTURES / "orthofinder" / "Orthologues_Mesocricetus_auratus" / "Mesocricetus_auratus__v__Mus_musculus.tsv"
)
BIOMART = FIXTURES / "biomart_hamster_mouse.txt"
EGGNOG = (FIXTURES / "eggnog" / "hamster.emapper.annotations", FIXTURES / "eggnog" / "mouse.emapper.annotations")
HAMSTER_TO_MOUSE = {
    ("Gcg", "Gcg"): "one2one",
    ("Sst", "Sst"): "one2one",
    ("Alb", "Alb"): "one2one",
    ("Sox9", "Sox9"): "one2one",
    ("Ins", "Ins1"): "one2many",
    ("Ins", "Ins2"): "one2many",
    ("Amy2a", "Amy2a5"): "many2many",
    ("Amy2a", "Amy2b"): "many2many",
    ("Amy2b", "Amy2a5"): "many2many",
    ("Amy2b", "Amy2b"): "many2many",
}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECIESVI_CACHE_DIR", str(tmp_path / "speciesvi_cache"))


def _pairs(table: pd.DataFrame) -> dict[tuple[str, str], str]:
    return {(t, c): h for t, c, h in table[["target_gene", "context_gene", "homology_type"]].itertuples(index=False)}


def _flipped(pairs: dict[tuple[str, str], str]) -> dict[tuple[str, str], str]:
    return {(c, t): h for (t, c), h in pairs.items()}


# --- species given by NCBI taxon id ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [10036, "10036", " 10036 ", "taxon:10036", "txid10036", "NCBITaxon:10036"])
def test_taxon_id_as_int_or_string(value):
    assert resolve_species(value).taxid == 10036


@pytest.mark.parametrize("value", ["hamster", "Golden hamster", "Mesocricetus auratus", "mesocricetus_auratus"])
def test_hamster_by_name(value):
    assert resolve_species(value).name == "hamster"


def test_taxon_without_a_name():
    species = resolve_species(4896)
    assert (species.name, species.taxid) == ("taxon 4896", 4896)


@pytest.mark.parametrize("value", ["10036x", "-5", "taxon:", "1e4", "Mesocricetus"])
def test_species_that_is_neither_name_nor_number(value):
    with pytest.raises(ValueError, match="not an NCBI taxon id \\(a positive whole number"):
        pp.homology_table(value, "mouse", source=ORTHOFINDER)


@pytest.mark.parametrize("value", [0, -10036])
def test_taxon_id_must_be_positive(value):
    with pytest.raises(ValueError, match="Unknown context_species"):
        pp.homology_table("mouse", value, source=ORTHOFINDER)


@pytest.mark.parametrize("value", [10036.0, True, None])
def test_taxon_id_of_the_wrong_type(value):
    with pytest.raises(TypeError, match="target_species must be a species name \\(str\\) or an NCBI taxon id"):
        pp.homology_table(value, "mouse", source=ORTHOFINDER)


@pytest.mark.parametrize(
    ("label", "taxid"),
    [
        ("Mus_musculus.GRCm39.pep.all", 10090),
        ("Mesocricetus_auratus", 10036),
        ("hamster_proteins", 10036),
        ("Golden Hamster", 10036),
        ("10141", 10141),
        ("txid10141", 10141),
        ("speciesA", None),
    ],
)
def test_labels_of_species_columns(label, taxid):
    assert label_taxid(label) == taxid


def test_auto_names_the_table_files():
    with pytest.raises(ValueError, match="OrthoFinder.*eggNOG-mapper"):
        pp.homology_table(10036, "mouse")


# --- MyGene.info for any taxa -----------------------------------------------------------------------------------


class _RecordedMyGene:
    """Stands in for mygene.MyGeneInfo: answers querymany from mygene_other_taxa.json by scopes and species."""

    def __init__(self, fail: bool = False):
        answers = json.loads((FIXTURES / "mygene_other_taxa.json").read_text())["answers"]
        self.recorded = {(a["scopes"], a["species"]): a["hits"] for a in answers}
        self.calls: list[dict] = []
        self.fail = fail

    def querymany(self, qterms, scopes=None, species=None, **kwargs):
        self.calls.append({"qterms": list(qterms), "scopes": scopes, "species": species, **kwargs})
        if self.fail:
            raise ConnectionError("Name or service not known")
        wanted = set(qterms)
        return [hit for hit in self.recorded.get((scopes, species), []) if hit["query"] in wanted]


@pytest.fixture
def recorded(monkeypatch):
    client = _RecordedMyGene()
    monkeypatch.setattr(_mygene, "_mygene_client", lambda: client)
    monkeypatch.setattr(_mygene, "RETRY_WAIT_S", 0.0)
    return client


def test_mygene_taxon_without_a_speciesvi_name(recorded):
    table = pp.homology_table(4896, "4932", source="mygene", genes=["cdc2", "act1", "ste11"])
    assert _pairs(table) == {("cdc2", "CDC28"): "one2one", ("act1", "ACT1"): "one2one"}
    assert table.attrs["target_species"] == "taxon 4896" and table.attrs["target_taxid"] == 4896
    assert table.attrs["context_species"] == "yeast" and table.attrs["context_taxid"] == 4932
    assert [(c["scopes"], c["species"]) for c in recorded.calls] == [("symbol", 4896), ("entrezgene", 4932)]


def test_mygene_hamster_by_taxon_id_says_to_pass_a_table(recorded, caplog):
    genes = ["Gcg", "Ins", "Alb", "Sox9", "Ppy"]
    with (
        caplog.at_level(logging.WARNING, logger="speciesvi.pp._mygene"),
        pytest.raises(
            ValueError,
            match=r"found 4 of 5 hamster symbols.*no mouse homolog.*HomoloGene.*no genes of "
            r"hamster \(10036\).*OrthoFinder.*eggNOG-mapper",
        ),
    ):
        pp.homology_table(10036, "mouse", source="mygene", genes=genes)
    assert recorded.calls[0]["species"] == 10036 and recorded.calls[0]["scopes"] == "symbol"
    assert "HomoloGene (MyGene.info) covers 21 species" in caplog.text


def test_mygene_mouse_to_hamster_says_to_pass_a_table(recorded):
    with pytest.raises(ValueError, match="no hamster homolog.*no genes of hamster \\(10036\\).*Ensembl BioMart"):
        pp.homology_table("mouse", "hamster", source="mygene", genes=["Gcg", "Ins1", "Alb"])
    assert len(recorded.calls) == 1  # no id lookup without a homolog


def test_mygene_answer_is_cached_and_reused_offline(tmp_path, monkeypatch, recorded):
    genes = ["cdc2", "act1"]
    first = pp.homology_table(4896, 4932, source="mygene", genes=genes, cache_dir=tmp_path)
    cached = list(tmp_path.glob("mygene_4896_to_4932_*.tsv"))
    assert len(cached) == 1 and not list(tmp_path.glob("*.part"))
    offline = _RecordedMyGene(fail=True)
    monkeypatch.setattr(_mygene, "_mygene_client", lambda: offline)
    again = pp.homology_table(4896, 4932, source="mygene", genes=list(reversed(genes)), cache_dir=tmp_path)
    assert offline.calls == []
    pd.testing.assert_frame_equal(first, again)
    # other genes are another query: offline, it fails with what to do
    with pytest.raises(ConnectionError, match="did not answer.*pass a homology table file as source="):
        pp.homology_table(4896, 4932, source="mygene", genes=["cdc2"], cache_dir=tmp_path)
    assert len(offline.calls) == _mygene.MAX_ATTEMPTS


def test_mygene_offline_error_names_the_table_files(monkeypatch):
    offline = _RecordedMyGene(fail=True)
    monkeypatch.setattr(_mygene, "_mygene_client", lambda: offline)
    monkeypatch.setattr(_mygene, "RETRY_WAIT_S", 0.0)
    with pytest.raises(ConnectionError, match="Without network, pass a homology table file.*OrthoFinder"):
        pp.homology_table(10036, "mouse", source="mygene", genes=["Gcg"])


# --- Ensembl BioMart exports of any species pair ----------------------------------------------------------------


@pytest.mark.parametrize("target", [10036, "10036", "hamster"])
def test_biomart_hamster_to_mouse(target):
    table = pp.homology_table(target, "mouse", source=BIOMART)
    assert _pairs(table) == HAMSTER_TO_MOUSE  # the paralog row and the gene without homolog are dropped
    scores = dict(zip(table["context_gene"], table["score"], strict=False))
    assert scores["Ins2"] > scores["Ins1"]  # orthology confidence 1 vs 0, similar identity
    assert table.attrs["target_taxid"] == 10036


def test_biomart_mouse_to_hamster():
    assert _pairs(pp.homology_table("mouse", 10036, source=BIOMART)) == _flipped(HAMSTER_TO_MOUSE)


def _guinea_pig_export() -> pd.DataFrame:
    # mouse dataset with the homologs of a species speciesvi has no name for (guinea pig, taxon 10141)
    return pd.DataFrame(
        {
            "Gene name": ["Gcg", "Ins1", "Ins2", "Sst", "Alb"],
            "Source of gene name": ["MGI Symbol"] * 5,
            "Guinea Pig gene name": ["GCG", "INS", "INS", "SST", ""],
            "Guinea Pig homology type": ["ortholog_one2one", "ortholog_one2many", "ortholog_one2many", "", ""],
            "%id. target Guinea Pig gene identical to query gene": ["95.1", "80.2", "81.3", "97.0", ""],
        }
    )


def test_biomart_species_known_only_by_taxon_id():
    table = pp.homology_table(10141, "mouse", source=_guinea_pig_export())
    assert _pairs(table) == {("GCG", "Gcg"): "one2one", ("INS", "Ins1"): "one2many", ("INS", "Ins2"): "one2many"}
    assert table["score"].tolist() == [95.1, 80.2, 81.3]
    # two species without a name (guinea pig, rabbit): which one the columns hold is not known
    with pytest.raises(ValueError, match="homolog columns for: guinea pig; .*rename the columns"):
        pp.homology_table(10141, 9986, source=_guinea_pig_export())
    rabbit = _guinea_pig_export().assign(**{"Rabbit gene name": "x", "Rabbit homology type": "ortholog_one2one"})
    with pytest.raises(ValueError, match="homolog columns for: guinea pig, rabbit;"):
        pp.homology_table(10141, "mouse", source=rabbit)


def test_biomart_attribute_names_of_hamster():
    df = pd.DataFrame(
        {
            "external_gene_name": ["Gcg", "Sst"],
            "mauratus_homolog_associated_gene_name": ["Gcg", "Sst"],
            "mauratus_homolog_orthology_type": ["ortholog_one2one", "ortholog_one2one"],
            "mauratus_homolog_perc_id": ["96.4", "98.2"],
        }
    )
    table = pp.homology_table(10036, "mouse", source=df)
    assert _pairs(table) == {("Gcg", "Gcg"): "one2one", ("Sst", "Sst"): "one2one"}
    assert table["score"].tolist() == [96.4, 98.2]


def test_biomart_without_homology_type_column():
    df = pd.read_csv(BIOMART, sep="\t", dtype=str).drop(columns="Mouse homology type")
    with pytest.raises(ValueError, match="needs both columns '<Species> gene name' and '<Species> homology type'"):
        pp.homology_table(10036, "mouse", source=df)


def test_biomart_without_query_gene_names():
    df = pd.read_csv(BIOMART, sep="\t", dtype=str).drop(columns="Gene name")
    with pytest.raises(ValueError, match="no column with the query species' gene names"):
        pp.homology_table(10036, "mouse", source=df)


# --- OrthoFinder ----------------------------------------------------------------------------------------------


def test_orthofinder_hamster_to_mouse():
    table = pp.homology_table("hamster", "mouse", source=ORTHOFINDER)
    expected = {**HAMSTER_TO_MOUSE, ("Ppy", "Ppy"): "one2one"}
    expected |= {("Reg3g", "Reg3g"): "one2many", ("Reg3b", "Reg3g"): "one2many"}
    assert _pairs(table) == expected
    assert table["score"].isna().all()
    assert table.attrs["source"] == str(ORTHOFINDER)


def test_orthofinder_orientation_and_taxon_ids():
    # mouse as the target, hamster by taxon id: the file's columns say which side is which
    assert _pairs(pp.homology_table("mouse", "10036", source=ORTHOFINDER)) == _flipped(
        _pairs(pp.homology_table(10036, "mouse", source=ORTHOFINDER))
    )


def test_orthofinder_column_of_a_species_without_a_name():
    df = pd.DataFrame({"Orthogroup": ["OG1", "OG2"], "Cavia_porcellus": ["GCG", "INS"], "mouse": ["Gcg", "Ins1, Ins2"]})
    table = pp.homology_table(10141, "mouse", source=df)
    assert _pairs(table) == {("GCG", "Gcg"): "one2one", ("INS", "Ins1"): "one2many", ("INS", "Ins2"): "one2many"}
    # a column that names a third species is not taken for the taxon
    with pytest.raises(ValueError, match="Cannot tell which columns.*taxon 10141"):
        pp.homology_table(10141, "mouse", source=df.rename(columns={"Cavia_porcellus": "Homo_sapiens"}))


def test_orthogroups_of_several_species():
    df = pd.DataFrame(
        {
            "Orthogroup": ["OG0000000", "OG0000001", "OG0000002"],
            "Homo_sapiens.GRCh38.pep.all": ["GCG", "INS", "AMY2A, AMY2B"],
            "Mesocricetus_auratus": ["Gcg", "", "Amy2a"],
            "Mus_musculus.GRCm39.pep.all": ["Gcg", "Ins1, Ins2", "Amy2a5, Amy2b"],
        }
    )
    table = pp.homology_table(10036, "mouse", source=df)
    assert _pairs(table) == {("Gcg", "Gcg"): "one2one", ("Amy2a", "Amy2a5"): "one2many", ("Amy2a", "Amy2b"): "one2many"}
    with pytest.raises(ValueError, match="Cannot tell which columns.*and the taxon 10141 genes"):
        pp.homology_table("mouse", 10141, source=df)


def test_orthofinder_with_unrecognised_columns():
    df = pd.DataFrame({"Orthogroup": ["OG1"], "speciesA": ["Gcg"], "speciesB": ["Gcg"]})
    with pytest.raises(ValueError, match="Rename the columns after the species, e.g. 'hamster' and 'mouse'"):
        pp.homology_table(10036, "mouse", source=df)


# --- eggNOG-mapper ----------------------------------------------------------------------------------------------


def test_eggnog_hamster_to_mouse():
    table = pp.homology_table("hamster", "mouse", source=EGGNOG)
    # Reg3g is annotated at Eukaryota only in the hamster file and the hamster Ppy protein has no preferred name
    assert _pairs(table) == HAMSTER_TO_MOUSE
    assert table.attrs["eggnog_level"] == "40674|Mammalia"
    assert table.attrs["source"].startswith("eggnog:")
    backward = pp.homology_table("mouse", 10036, source=list(reversed(EGGNOG)))
    assert _pairs(backward) == _flipped(HAMSTER_TO_MOUSE)


def test_eggnog_skips_a_narrow_level_few_genes_reach(tmp_path):
    # Only Gcg is placed in a Rodentia OG: comparing at Rodentia would leave every other gene without a homolog.
    paths = []
    for source in EGGNOG:
        text = source.read_text().replace("4GA01T@40674|Mammalia\t", "4GA01T@40674|Mammalia,5RD01@9989|Rodentia\t")
        paths.append(tmp_path / source.name)
        paths[-1].write_text(text)
    table = pp.homology_table("hamster", "mouse", source=tuple(paths))
    assert table.attrs["eggnog_level"] == "40674|Mammalia"
    assert _pairs(table) == HAMSTER_TO_MOUSE


def test_eggnog_needs_both_files():
    with pytest.raises(ValueError, match="annotates one species; pass the files of both species"):
        pp.homology_table("hamster", "mouse", source=EGGNOG[0])
    with pytest.raises(ValueError, match="must hold two eggNOG-mapper annotation files.*got 3"):
        pp.homology_table("hamster", "mouse", source=(*EGGNOG, EGGNOG[0]))
    with pytest.raises(ValueError, match="neither one of"):
        pp.homology_table("hamster", "mouse", source=(EGGNOG[0], "/no/such.emapper.annotations"))


def test_eggnog_file_without_the_columns(tmp_path):
    path = tmp_path / "old.emapper.annotations"
    path.write_text("## emapper-1.0.3\n#query_name\tseed_eggNOG_ortholog\tpredicted_gene_name\nq1\t10090.x\tGcg\n")
    with pytest.raises(ValueError, match="lacks the columns \\['eggNOG_OGs', 'Preferred_name'\\]"):
        pp.homology_table("hamster", "mouse", source=(path, EGGNOG[1]))
    headless = tmp_path / "headless.emapper.annotations"
    headless.write_text("## emapper-2.1.12\nq1\t10090.x\n")
    with pytest.raises(ValueError, match="no '#query' header line"):
        pp.homology_table("hamster", "mouse", source=(headless, EGGNOG[1]))


def test_eggnog_files_without_a_shared_level(tmp_path):
    lines = EGGNOG[0].read_text().splitlines()
    renamed = [
        line.replace("@", "@9999").replace("|", "|Elsewhere") if not line.startswith("#") else line for line in lines
    ]
    path = tmp_path / "elsewhere.emapper.annotations"
    path.write_text("\n".join(renamed) + "\n")
    with pytest.raises(ValueError, match="share no taxonomic level"):
        pp.homology_table("hamster", "mouse", source=(path, EGGNOG[1]))


# --- errors that do not depend on the format ---------------------------------------------------------------------


def test_unknown_format_lists_the_new_ones():
    df = pd.DataFrame({"hamster_id": ["Gcg"], "mouse_id": ["Gcg"]})
    with pytest.raises(ValueError, match="Unrecognised homology table.*OrthoFinder.*eggNOG-mapper"):
        pp.homology_table(10036, "mouse", source=df)


def test_source_of_the_wrong_type():
    with pytest.raises(TypeError, match="source must be one of"):
        pp.homology_table(10036, "mouse", source=42)


# --- translating hamster genes with the tables ------------------------------------------------------------------


def test_translate_hamster_genes_one2one_unless_told_otherwise():
    hamster = ad.AnnData(np.ones((2, 5), dtype=np.float32))
    hamster.var_names = ["Gcg", "Ins", "Amy2a", "Alb", "Cyp2c23"]
    mouse = ad.AnnData(np.ones((2, 6), dtype=np.float32))
    mouse.var_names = ["Gcg", "Ins1", "Ins2", "Amy2a5", "Alb", "Cyp2c23"]
    table = pp.homology_table(10036, "mouse", source=ORTHOFINDER)
    pp.translate_genes(hamster, table, context=mouse, match_symbols=False)
    assert hamster.var["context_gene"].tolist() == ["Gcg", np.nan, np.nan, "Alb", np.nan]
    pp.translate_genes(hamster, table, context=mouse, policy="best", match_symbols=False)
    assert hamster.var["context_gene"].tolist() == ["Gcg", "Ins1", "Amy2a5", "Alb", np.nan]
    assert hamster.var["homology_type"].tolist() == ["one2one", "one2many", "many2many", "one2one", np.nan]
