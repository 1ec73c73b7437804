"""Parsers that turn homology tables in their published formats into speciesvi's tidy table (see ``_homology_tidy``).

Recognised formats (by their columns, case and punctuation ignored):

- Ensembl BioMart exports of any species pair, with display names (``Gene name``, ``Mouse gene name``,
  ``Mouse homology type``), the R-sanitised display names of the bundled file (``gene.name``, ``human.gene.name``,
  ``human.homology.type``) or BioMart attribute names (``external_gene_name``,
  ``mmusculus_homolog_associated_gene_name``, ``mmusculus_homolog_orthology_type``);
- OrthoFinder ``Orthologues/Orthologues_<A>/<A>__v__<B>.tsv`` and ``Orthogroups.tsv`` files (``Orthogroup`` and one
  column per species, genes comma-separated), see ``_orthofinder``;
- HGNC HCOP exports (6 or 15 columns: ``human_symbol``, ``mouse_symbol``, ``support``, ...);
- the MGI ``HOM_AllOrganism.rpt`` report (``DB Class Key``, ``NCBI Taxon ID``, ``Symbol``, ...);
- an already tidy table (``target_gene``, ``context_gene`` and optionally ``homology_type``, ``score``).

eggNOG-mapper annotations come as two files, one per species (``_eggnog``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ._homology_tidy import HOMOLOGY_TYPES, TIDY_COLUMNS, clean_symbols, finish_table, norm_column, types_from_degrees
from ._orthofinder import is_orthofinder, parse_orthofinder
from ._species import is_registered, label_taxid, lookup_species

if TYPE_CHECKING:
    from ._species import Species

__all__ = [
    "ACCEPTED_FORMATS",
    "HOMOLOGY_TYPES",
    "TIDY_COLUMNS",
    "parse_homology_frame",
    "read_table_file",
    "types_from_degrees",
]

ACCEPTED_FORMATS = (
    "Ensembl BioMart export ('Gene name' + '<Species> gene name' + '<Species> homology type', "
    "or 'external_gene_name' + '<prefix>_homolog_associated_gene_name' + '<prefix>_homolog_orthology_type'); "
    "OrthoFinder Orthologues_<A>/<A>__v__<B>.tsv or Orthogroups.tsv ('Orthogroup' + one column per species); "
    "eggNOG-mapper .emapper.annotations (two files, passed as source=(target_file, context_file)); "
    "HGNC HCOP export ('<species>_symbol' for both species, e.g. 'human_symbol' and 'mouse_symbol'); "
    "MGI HOM_AllOrganism.rpt ('DB Class Key', 'NCBI Taxon ID', 'Symbol'); "
    "tidy table ('target_gene', 'context_gene'[, 'homology_type', 'score'])"
)

_ENSEMBL_NAME = re.compile(r"^(?P<sp>.+?) (?:homolog )?(?:associated )?gene name$")
_ENSEMBL_TYPE = re.compile(r"^(?P<sp>.+?) (?:homolog )?(?:orthology|homology) type$")
_ENSEMBL_QUERY_NAMES = ("gene name", "external gene name", "associated gene name")
# "Source of gene name" (e.g. "MGI Symbol") looks like a homolog's gene name column but is an attribute of the query.
_ENSEMBL_NOT_SPECIES = frozenset({"source of", "external", "associated"})
# Conservation columns, as (display-name pattern, attribute-name pattern, scale to 0..100).
_ENSEMBL_SCORES = (
    ("{sp} orthology confidence 0 low 1 high", "{sp} homolog orthology confidence", 100.0),
    ("{sp} gene order conservation score", "{sp} homolog goc score", 1.0),
    ("{sp} whole genome alignment coverage", "{sp} homolog wga coverage", 1.0),
    ("id target {sp} gene identical to query gene", "{sp} homolog perc id", 1.0),
)
_HCOP_SYMBOL = re.compile(r"^(?P<sp>.+) symbol$")


def read_table_file(path: str | Path) -> pd.DataFrame:
    """Read a homology table from a tab- or comma-separated file (compression inferred from the suffix)."""
    header = pd.read_csv(path, sep="\t", nrows=0, dtype=str)
    sep = "\t" if len(header.columns) > 1 else ","
    return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)


def _ensembl_homolog_species(norm: dict[str, str], target: Species, context: Species) -> tuple[str, int, str, str]:
    """(label, taxon id, gene name column, homology type column) of the target or context homologs, if any."""
    names: dict[str, str] = {}
    types: dict[str, str] = {}
    for key, column in norm.items():
        if key in _ENSEMBL_QUERY_NAMES:
            continue
        if (m := _ENSEMBL_NAME.match(key)) and m["sp"] not in _ENSEMBL_NOT_SPECIES:
            names.setdefault(m["sp"], column)
        elif m := _ENSEMBL_TYPE.match(key):
            types.setdefault(m["sp"], column)
    labels = [label for label in names if label in types]
    taxids = {label: label_taxid(label) for label in labels}
    matched = [label for label in labels if taxids[label] in (target.taxid, context.taxid)]
    taxon_only = [sp for sp in (target, context) if not is_registered(sp)]
    unnamed = [label for label in labels if taxids[label] is None]
    if not matched and len(taxon_only) == 1 and len(unnamed) == 1:
        # A species known only by its taxon id is the one homolog species of the table speciesvi cannot name.
        matched, taxids[unnamed[0]] = unnamed, taxon_only[0].taxid
    if len(matched) > 1:
        raise ValueError(
            f"This Ensembl BioMart table holds homolog columns of both {target.name} and {context.name}; "
            "pass a table whose query species is one of them."
        )
    if not matched:
        found = ", ".join(sorted(set(names) | set(types))) or "none"
        raise ValueError(
            f"This Ensembl BioMart table has homolog columns for: {found}; it needs both columns "
            f"'<Species> gene name' and '<Species> homology type' of the {target.name} or the {context.name} "
            "homologs, and the query species' 'Gene name'. A species given by taxon id alone matches the one "
            "homolog species of the table that speciesvi has no name for; otherwise rename the columns after "
            "the species (e.g. 'Hamster gene name') or pass a tidy table."
        )
    label = matched[0]
    return label, int(taxids[label]), names[label], types[label]


def _parse_ensembl(df: pd.DataFrame, norm: dict[str, str], target: Species, context: Species) -> pd.DataFrame:
    query_col = next((norm[n] for n in _ENSEMBL_QUERY_NAMES if n in norm), None)
    prefix, taxid, homolog_col, type_col = _ensembl_homolog_species(norm, target, context)
    if query_col is None:
        raise ValueError(
            "This Ensembl BioMart table has no column with the query species' gene names ('Gene name' or "
            "'external_gene_name'); add it to the export."
        )
    if taxid == target.taxid:
        target_col, context_col = homolog_col, query_col
    else:
        target_col, context_col = query_col, homolog_col
    scores = []
    for display, attribute, scale in _ENSEMBL_SCORES:
        for pattern in (display, attribute):
            if (col := norm.get(pattern.format(sp=prefix))) is not None:
                scores.append(pd.to_numeric(df[col], errors="coerce") * scale)
                break
    score = pd.concat(scores, axis=1).mean(axis=1) if scores else None
    return finish_table(df[target_col], df[context_col], df[type_col], score)


def _parse_hcop(df: pd.DataFrame, symbol_cols: dict[int, str], target: Species, context: Species) -> pd.DataFrame:
    support = None
    if "support" in df.columns:
        entries = df["support"].astype("string").fillna("")
        support = entries.str.split(",").map(lambda items: sum(bool(s.strip()) for s in items)).astype(float)
    return finish_table(df[symbol_cols[target.taxid]], df[symbol_cols[context.taxid]], None, support)


def _parse_mgi(df: pd.DataFrame, norm: dict[str, str], target: Species, context: Species) -> pd.DataFrame:
    table = pd.DataFrame(
        {
            "key": df[norm["db class key"]].astype(str).str.strip(),
            "taxid": pd.to_numeric(df[norm["ncbi taxon id"]], errors="coerce"),
            "symbol": clean_symbols(df[norm["symbol"]]),
        }
    ).dropna()
    present = set(table["taxid"].astype(int))
    missing = [sp.name for sp in (target, context) if sp.taxid not in present]
    if missing:
        raise ValueError(
            f"The MGI homology report has no genes of {' or '.join(missing)} (taxon ids present: "
            f"{sorted(present)}); use source='mygene' or an Ensembl/HCOP table for this species pair."
        )
    t = table[table["taxid"] == target.taxid][["key", "symbol"]].drop_duplicates()
    c = table[table["taxid"] == context.taxid][["key", "symbol"]].drop_duplicates()
    pairs = t.merge(c, on="key", suffixes=("_t", "_c"), sort=False)
    return finish_table(pairs["symbol_t"], pairs["symbol_c"], None, None)


def parse_homology_frame(df: pd.DataFrame, target: Species, context: Species) -> pd.DataFrame:
    """Detect the format of ``df`` from its columns and return the tidy homology table.

    Parameters
    ----------
    df
        Table in one of the formats listed in the module docstring.
    target, context
        The two species; they decide the orientation of Ensembl and HCOP tables.

    Returns
    -------
    Tidy table with the columns of :data:`TIDY_COLUMNS`.
    """
    norm: dict[str, str] = {}
    for column in df.columns:
        norm.setdefault(norm_column(column), column)
    if {"target gene", "context gene"} <= norm.keys():
        types = df[norm["homology type"]].astype(object) if "homology type" in norm else None
        score = df[norm["score"]] if "score" in norm else None
        return finish_table(df[norm["target gene"]], df[norm["context gene"]], types, score)
    if {"db class key", "ncbi taxon id", "symbol"} <= norm.keys():
        return _parse_mgi(df, norm, target, context)
    if is_orthofinder(norm):
        return parse_orthofinder(df, norm, target, context)
    symbol_cols = {}
    for key, column in norm.items():
        if (m := _HCOP_SYMBOL.match(key)) and (sp := lookup_species(m["sp"])) is not None:
            symbol_cols[sp.taxid] = column
    if len(symbol_cols) >= 2:
        if target.taxid in symbol_cols and context.taxid in symbol_cols:
            return _parse_hcop(df, symbol_cols, target, context)
        names = ", ".join(sorted(lookup_species(t).name for t in symbol_cols))
        raise ValueError(f"This HCOP table holds {names} symbols, not {target.name} and {context.name}.")
    ensembl_keys = (k for k in norm if k not in _ENSEMBL_QUERY_NAMES)
    if any(_ENSEMBL_TYPE.match(k) or _ENSEMBL_NAME.match(k) for k in ensembl_keys):
        return _parse_ensembl(df, norm, target, context)
    raise ValueError(
        f"Unrecognised homology table with columns {list(df.columns)[:12]}. Accepted formats: {ACCEPTED_FORMATS}."
    )
