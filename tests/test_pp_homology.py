from __future__ import annotations

import io
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

import speciesvi.pp as pp
from speciesvi.pp import _mgi, _mygene
from speciesvi.pp._species import resolve_species

FIXTURES = Path(__file__).parent / "data" / "pp"
MGI_EXCERPT = FIXTURES / "HOM_AllOrganism_excerpt.rpt"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """MyGene.info answers are cached: keep each test's cache apart from the user's and the other tests'."""
    monkeypatch.setenv("SPECIESVI_CACHE_DIR", str(tmp_path / "speciesvi_cache"))


def _pairs(table: pd.DataFrame) -> dict[tuple[str, str], str]:
    return {(t, c): h for t, c, h in table[["target_gene", "context_gene", "homology_type"]].itertuples(index=False)}


# --- species ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["human", "Human", "homo sapiens", "hsapiens", 9606, "9606"])
def test_species_by_name_or_taxid(value):
    assert resolve_species(value).taxid == 9606


def test_unknown_species_lists_known_ones():
    with pytest.raises(ValueError, match=r"Unknown target_species 'martian'.*human \(9606\).*mouse \(10090\)"):
        pp.homology_table("martian", "mouse")
    with pytest.raises(ValueError, match="Unknown context_species '10036x'.*not an NCBI taxon id"):
        pp.homology_table("human", "10036x")


def test_same_species_is_an_error():
    with pytest.raises(ValueError, match="both human"):
        pp.homology_table(9606, "human")


# --- offline table ------------------------------------------------------------------------------------------


def test_offline_table_human_to_mouse():
    table = pp.homology_table("human", "mouse")
    assert table.columns.tolist() == ["target_gene", "context_gene", "homology_type", "score"]
    assert set(table["homology_type"]) == {"one2one", "one2many", "many2many"}
    pairs = _pairs(table)
    assert pairs[("GCG", "Gcg")] == "one2one"
    assert pairs[("INS", "Ins1")] == pairs[("INS", "Ins2")] == "one2many"
    assert len(table) > 20_000
    assert table.attrs["source"].startswith("offline")
    assert not table.duplicated(["target_gene", "context_gene"]).any()


def test_offline_table_is_oriented_by_species():
    forward = pp.homology_table("human", "mouse", source="offline")
    backward = pp.homology_table(10090, 9606, source="offline")
    assert ("Gcg", "GCG") in _pairs(backward)
    assert ("GCG", "Gcg") not in _pairs(backward)
    flipped = set(zip(backward["context_gene"], backward["target_gene"], strict=True))
    assert flipped == set(zip(forward["target_gene"], forward["context_gene"], strict=True))


def test_offline_table_only_for_human_mouse():
    with pytest.raises(ValueError, match="human<->mouse only"):
        pp.homology_table("rat", "mouse", source="offline")


# --- user tables in the published formats ----------------------------------------------------------------------


def test_ensembl_display_names_mouse_query_to_human_target(tmp_path):
    # BioMart export of the mouse dataset with human homolog attributes, as a TSV file
    df = pd.DataFrame(
        {
            "Gene stable ID": ["ENSMUSG1", "ENSMUSG2", "ENSMUSG3", "ENSMUSG4"],
            "Gene name": ["Gcg", "Ins1", "Ins2", "Gm1"],
            "Human gene stable ID": ["ENSG1", "ENSG2", "ENSG2", ""],
            "Human gene name": ["GCG", "INS", "INS", ""],
            "Human homology type": ["ortholog_one2one", "ortholog_one2many", "ortholog_one2many", ""],
            "Human orthology confidence [0 low, 1 high]": ["1", "0", "1", ""],
        }
    )
    path = tmp_path / "mart_export.txt"
    df.to_csv(path, sep="\t", index=False)
    table = pp.homology_table("human", "mouse", source=path)
    assert _pairs(table) == {("GCG", "Gcg"): "one2one", ("INS", "Ins1"): "one2many", ("INS", "Ins2"): "one2many"}
    scores = dict(zip(table["context_gene"], table["score"], strict=True))
    assert scores["Ins2"] > scores["Ins1"]
    # the same file read for a mouse target: orientation follows the species columns
    assert ("Gcg", "GCG") in _pairs(pp.homology_table("mouse", "human", source=path))


def test_ensembl_attribute_names():
    df = pd.DataFrame(
        {
            "external_gene_name": ["GCG", "SST"],
            "rnorvegicus_homolog_associated_gene_name": ["Gcg", "Sst"],
            "rnorvegicus_homolog_orthology_type": ["ortholog_one2one", "ortholog_one2one"],
            "rnorvegicus_homolog_goc_score": ["100", "75"],
        }
    )
    table = pp.homology_table("rat", "human", source=df)
    assert _pairs(table) == {("Gcg", "GCG"): "one2one", ("Sst", "SST"): "one2one"}
    assert table["score"].tolist() == [100.0, 75.0]


def test_ensembl_table_of_other_species_is_rejected():
    df = pd.DataFrame({"Gene name": ["GCG"], "Rat gene name": ["Gcg"], "Rat homology type": ["ortholog_one2one"]})
    with pytest.raises(ValueError, match="homolog columns for: rat"):
        pp.homology_table("human", "mouse", source=df)


def test_hcop_fifteen_columns():
    columns = [
        "human_entrez_gene",
        "human_ensembl_gene",
        "hgnc_id",
        "human_name",
        "human_symbol",
        "human_chr",
        "human_assert_ids",
        "mouse_entrez_gene",
        "mouse_ensembl_gene",
        "mgi_id",
        "mouse_name",
        "mouse_symbol",
        "mouse_chr",
        "mouse_assert_ids",
        "support",
    ]
    rows = [
        ("GCG", "Gcg", "Ensembl,HGNC,NCBI,OMA,Panther"),
        ("INS", "Ins1", "HGNC,NCBI"),
        ("INS", "Ins2", "Ensembl,HGNC,NCBI,Panther"),
        ("AMY2A", "Amy2a5", "Ensembl"),
        ("AMY2A", "Amy2b", "Ensembl"),
        ("AMY2B", "Amy2a5", "Ensembl"),
        ("AMY2B", "Amy2b", "Ensembl"),
        ("LINC00473", "-", "Ensembl"),
    ]
    df = pd.DataFrame([["x"] * 4 + [h] + ["x"] * 6 + [m, "x", "x", s] for h, m, s in rows], columns=columns)
    table = pp.homology_table("mouse", "human", source=df)
    pairs = _pairs(table)
    assert pairs[("Gcg", "GCG")] == "one2one"
    assert pairs[("Ins1", "INS")] == pairs[("Ins2", "INS")] == "one2many"
    assert pairs[("Amy2b", "AMY2A")] == "many2many"
    assert len(table) == 7  # the row without a mouse symbol ('-') is dropped
    assert dict(zip(table["target_gene"], table["score"], strict=False))["Gcg"] == 5.0


def test_mgi_report_from_file():
    table = pp.homology_table("human", "mouse", source=MGI_EXCERPT)
    pairs = _pairs(table)
    assert pairs[("GCG", "Gcg")] == "one2one"
    assert pairs[("INS", "Ins1")] == "one2many"
    assert pairs[("AMY2A", "Amy2b")] == "many2many"
    assert "LINC00473" not in set(table["target_gene"])  # a class with no mouse gene
    zebrafish = _pairs(pp.homology_table("zebrafish", "human", source=MGI_EXCERPT))
    assert zebrafish[("gcga", "GCG")] == zebrafish[("gcgb", "GCG")] == "one2many"
    assert zebrafish[("sox9a", "SOX9")] == "one2many"


def test_mgi_report_without_the_species():
    with pytest.raises(ValueError, match="no genes of chicken"):
        pp.homology_table("chicken", "human", source=MGI_EXCERPT)


def test_table_with_unknown_columns():
    df = pd.DataFrame({"gene_a": ["GCG"], "gene_b": ["Gcg"]})
    with pytest.raises(ValueError, match="Unrecognised homology table.*Accepted formats: Ensembl BioMart.*HCOP.*MGI"):
        pp.homology_table("human", "mouse", source=df)


def test_source_that_is_no_file():
    with pytest.raises(ValueError, match="neither one of"):
        pp.homology_table("human", "mouse", source="/no/such/file.tsv")


# --- MGI download and cache ----------------------------------------------------------------------------------


class _FakeUrlopen:
    def __init__(self, payload: bytes | None = None, error: Exception | None = None):
        self.payload, self.error, self.calls = payload, error, []

    def __call__(self, url, timeout=None):
        self.calls.append(url)
        if self.error is not None:
            raise self.error
        return io.BytesIO(self.payload)


def test_mgi_downloads_once_and_reuses_the_cache(tmp_path, monkeypatch):
    fake = _FakeUrlopen(MGI_EXCERPT.read_bytes())
    monkeypatch.setattr(urllib.request, "urlopen", fake)
    table = pp.homology_table("rat", "mouse", source="mgi", cache_dir=tmp_path)
    assert fake.calls == [_mgi.MGI_URL]
    assert _pairs(table)[("Gcg", "Gcg")] == "one2one"
    assert _pairs(table)[("Ins2", "Ins2")] == "many2many"  # 2 rat x 2 mouse insulin genes
    assert sorted(p.name for p in tmp_path.iterdir()) == [_mgi.MGI_FILENAME]  # no temporary file left
    again = pp.homology_table("rat", "mouse", source="mgi", cache_dir=tmp_path)
    assert len(fake.calls) == 1
    pd.testing.assert_frame_equal(table, again)
    # "auto" uses the cached report for pairs the offline table does not cover
    auto = pp.homology_table("zebrafish", "mouse", cache_dir=tmp_path)
    assert auto.attrs["source"].startswith("mgi") and len(fake.calls) == 1


def test_mgi_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", _FakeUrlopen(error=urllib.error.URLError("no route to host")))
    with pytest.raises(ConnectionError, match="Could not download the MGI homology report.*source='offline'"):
        pp.homology_table("rat", "mouse", source="mgi", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_mgi_download_that_is_not_the_report(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", _FakeUrlopen(b"<html>maintenance</html>\n"))
    with pytest.raises(ValueError, match="not the MGI homology report"):
        pp.homology_table("rat", "mouse", source="mgi", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_auto_without_offline_table_or_cache(tmp_path):
    with pytest.raises(
        ValueError, match="source='mgi'.*source='mygene'.*Ensembl BioMart / OrthoFinder / HCOP / MGI file"
    ):
        pp.homology_table("rat", "mouse", cache_dir=tmp_path)


def test_mgi_species_outside_the_report():
    with pytest.raises(ValueError, match="human, mouse, rat and zebrafish"):
        pp.homology_table("dog", "human", source="mgi")


# --- MyGene.info ---------------------------------------------------------------------------------------------


class _RecordedMyGene:
    """Stands in for mygene.MyGeneInfo: answers querymany from the recorded JSON."""

    def __init__(self, fail_first: int = 0):
        self.recorded = json.loads((FIXTURES / "mygene_human_to_mouse.json").read_text())
        self.calls: list[dict] = []
        self.fail_first = fail_first

    def querymany(self, qterms, scopes=None, **kwargs):
        self.calls.append({"qterms": list(qterms), "scopes": scopes, **kwargs})
        if self.fail_first > 0:
            self.fail_first -= 1
            raise ConnectionError("connection reset by peer")
        wanted = set(qterms)
        return [hit for hit in self.recorded[scopes] if hit["query"] in wanted]


def test_mygene_homology(monkeypatch):
    client = _RecordedMyGene()
    monkeypatch.setattr(_mygene, "_mygene_client", lambda: client)
    genes = ["INS", "GCG", "COL1A1", "SOX9", "sst", "LINC00473", "NOTAGENE1"]
    table = pp.homology_table("human", "mouse", source="mygene", genes=genes)
    assert _pairs(table) == {
        ("INS", "Ins1"): "one2many",
        ("INS", "Ins2"): "one2many",
        ("GCG", "Gcg"): "one2one",
        ("COL1A1", "Col1a1"): "one2one",
        ("SOX9", "Sox9"): "one2one",
    }  # 'sst' matched SST only case-insensitively: not used
    symbol_call, id_call = client.calls
    assert symbol_call["scopes"] == "symbol" and symbol_call["species"] == 9606
    assert "homologene" in symbol_call["fields"]
    assert id_call["scopes"] == "entrezgene" and id_call["species"] == 10090


def test_mygene_batches_and_retries(monkeypatch):
    client = _RecordedMyGene(fail_first=1)
    monkeypatch.setattr(_mygene, "_mygene_client", lambda: client)
    monkeypatch.setattr(_mygene, "BATCH_SIZE", 2)
    monkeypatch.setattr(_mygene, "RETRY_WAIT_S", 0.0)
    table = pp.homology_table("human", "mouse", source="mygene", genes=["INS", "GCG", "SOX9"])
    assert len(table) == 4
    sizes = [len(c["qterms"]) for c in client.calls if c["scopes"] == "symbol"]
    assert sizes == [2, 2, 1]  # the first batch failed once and was retried


def test_mygene_gives_up_with_a_clear_error(monkeypatch):
    client = _RecordedMyGene(fail_first=10)
    monkeypatch.setattr(_mygene, "_mygene_client", lambda: client)
    monkeypatch.setattr(_mygene, "RETRY_WAIT_S", 0.0)
    with pytest.raises(ConnectionError, match="did not answer symbol lookup after 3 attempts"):
        pp.homology_table("human", "mouse", source="mygene", genes=["INS"])


def test_mygene_needs_genes():
    with pytest.raises(ValueError, match="needs genes="):
        pp.homology_table("human", "mouse", source="mygene")


def test_pp_does_not_import_torch_or_scvi():
    code = "import sys, speciesvi.pp; print(sorted({'torch', 'scvi'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
