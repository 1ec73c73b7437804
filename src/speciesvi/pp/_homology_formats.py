"""Parsers that turn homology tables in their published formats into speciesvi's tidy table.

The tidy table has one row per (target gene, context gene) pair and the columns

``target_gene``
    symbol in the target species,
``context_gene``
    symbol in the context species,
``homology_type``
    ``"one2one"``, ``"one2many"`` or ``"many2many"``; as in Ensembl, ``"one2many"`` does not say which side has
    the many genes,
``score``
    a conservation / support score where the source has one (higher is better), else NaN.

Recognised formats (by their columns, case and punctuation ignored):

- Ensembl BioMart exports, with display names (``Gene name``, ``Mouse gene name``, ``Mouse homology type``), the
  R-sanitised display names of the bundled file (``gene.name``, ``human.gene.name``, ``human.homology.type``) or
  BioMart attribute names (``external_gene_name``, ``mmusculus_homolog_associated_gene_name``,
  ``mmusculus_homolog_orthology_type``);
- HGNC HCOP exports (6 or 15 columns: ``human_symbol``, ``mouse_symbol``, ``support``, ...);
- the MGI ``HOM_AllOrganism.rpt`` report (``DB Class Key``, ``NCBI Taxon ID``, ``Symbol``, ...);
- an already tidy table (``target_gene``, ``context_gene`` and optionally ``homology_type``, ``score``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ._species import lookup_species

if TYPE_CHECKING:
    from ._species import Species

TIDY_COLUMNS = ("target_gene", "context_gene", "homology_type", "score")
HOMOLOGY_TYPES = ("one2one", "one2many", "many2many")

ACCEPTED_FORMATS = (
    "Ensembl BioMart export ('Gene name' + '<Species> gene name' + '<Species> homology type', "
    "or 'external_gene_name' + '<prefix>_homolog_associated_gene_name' + '<prefix>_homolog_orthology_type'); "
    "HGNC HCOP export ('<species>_symbol' for both species, e.g. 'human_symbol' and 'mouse_symbol'); "
    "MGI HOM_AllOrganism.rpt ('DB Class Key', 'NCBI Taxon ID', 'Symbol'); "
    "tidy table ('target_gene', 'context_gene'[, 'homology_type', 'score'])"
)

_MISSING_SYMBOLS = {"", "-", "nan", "none", "na", "n/a"}

_ENSEMBL_NAME = re.compile(r"^(?P<sp>.+?) (?:homolog )?(?:associated )?gene name$")
_ENSEMBL_TYPE = re.compile(r"^(?P<sp>.+?) (?:homolog )?(?:orthology|homology) type$")
_ENSEMBL_QUERY_NAMES = ("gene name", "external gene name", "associated gene name")
# Conservation columns, as (display-name pattern, attribute-name pattern, scale to 0..100).
_ENSEMBL_SCORES = (
    ("{sp} orthology confidence 0 low 1 high", "{sp} homolog orthology confidence", 100.0),
    ("{sp} gene order conservation score", "{sp} homolog goc score", 1.0),
    ("{sp} whole genome alignment coverage", "{sp} homolog wga coverage", 1.0),
    ("id target {sp} gene identical to query gene", "{sp} homolog perc id", 1.0),
)
_HCOP_SYMBOL = re.compile(r"^(?P<sp>.+) symbol$")


def _norm(column: object) -> str:
    """Lower-case a column name and collapse punctuation, so ``human.gene.name`` == ``Human gene name``."""
    return re.sub(r"[^0-9a-z]+", " ", str(column).lower()).strip()


def _clean_symbols(values: pd.Series) -> pd.Series:
    """Symbols as stripped strings; empty or placeholder entries become NaN. Case is never changed."""
    out = values.astype("string").str.strip()
    out = out.mask(out.str.lower().isin(_MISSING_SYMBOLS))
    return out.astype(object).where(out.notna(), np.nan)


def read_table_file(path: str | Path) -> pd.DataFrame:
    """Read a homology table from a tab- or comma-separated file (compression inferred from the suffix)."""
    header = pd.read_csv(path, sep="\t", nrows=0, dtype=str)
    sep = "\t" if len(header.columns) > 1 else ","
    return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)


def types_from_degrees(target_genes: pd.Series, context_genes: pd.Series) -> np.ndarray:
    """Homology type of each pair from how many partners its two genes have in the table.

    A pair is ``one2one`` when both genes have a single partner, ``many2many`` when both have several and
    ``one2many`` otherwise. On complete bipartite homology groups (MGI classes, Ensembl gene trees) this equals the
    group-size definition.
    """
    pairs = pd.DataFrame({"t": target_genes.to_numpy(), "c": context_genes.to_numpy()})
    deg_t = pairs.groupby("t")["c"].transform("size").to_numpy()
    deg_c = pairs.groupby("c")["t"].transform("size").to_numpy()
    return np.select([(deg_t == 1) & (deg_c == 1), (deg_t > 1) & (deg_c > 1)], ["one2one", "many2many"], "one2many")


def _finish(target: pd.Series, context: pd.Series, types: pd.Series | None, score: pd.Series | None) -> pd.DataFrame:
    """Assemble, drop incomplete and duplicated pairs, derive missing homology types."""
    out = pd.DataFrame(
        {
            "target_gene": _clean_symbols(target).to_numpy(),
            "context_gene": _clean_symbols(context).to_numpy(),
            "homology_type": np.nan if types is None else types.to_numpy(dtype=object),
            "score": np.nan if score is None else pd.to_numeric(score, errors="coerce").to_numpy(dtype=float),
        }
    )
    out = out.dropna(subset=["target_gene", "context_gene"])
    out = out.drop_duplicates(subset=["target_gene", "context_gene"], keep="first").reset_index(drop=True)
    if types is None:
        out["homology_type"] = types_from_degrees(out["target_gene"], out["context_gene"])
    else:
        # Ensembl spells the types "ortholog_one2one"; other relation types (paralogs, gene splits) are dropped.
        out["homology_type"] = out["homology_type"].astype("string").str.strip().str.removeprefix("ortholog_")
        out = out[out["homology_type"].isin(HOMOLOGY_TYPES)].reset_index(drop=True)
        out["homology_type"] = out["homology_type"].astype(object)
    out["score"] = out["score"].astype(float)
    return out


def _parse_ensembl(df: pd.DataFrame, norm: dict[str, str], target: Species, context: Species) -> pd.DataFrame:
    query_col = next((norm[n] for n in _ENSEMBL_QUERY_NAMES if n in norm), None)
    names: dict[int, tuple[str, str]] = {}
    types: dict[int, str] = {}
    for key, column in norm.items():
        if key in _ENSEMBL_QUERY_NAMES:
            continue
        if (m := _ENSEMBL_NAME.match(key)) and (sp := lookup_species(m["sp"])) is not None:
            names[sp.taxid] = (m["sp"], column)
        elif (m := _ENSEMBL_TYPE.match(key)) and (sp := lookup_species(m["sp"])) is not None:
            types[sp.taxid] = column
    both = [taxid for taxid in names if taxid in types and taxid in (target.taxid, context.taxid)]
    if query_col is None or not both:
        others = ", ".join(sorted({lookup_species(p).name for p, _ in names.values()})) or "none"
        raise ValueError(
            f"This Ensembl BioMart table has homolog columns for: {others}; it needs the columns of the "
            f"{target.name} or the {context.name} homologs ('<Species> gene name', '<Species> homology type') "
            "and the query species' 'Gene name'."
        )
    if len(both) > 1:
        raise ValueError(
            f"This Ensembl BioMart table holds homolog columns of both {target.name} and {context.name}; "
            "pass a table whose query species is one of them."
        )
    taxid = both[0]
    prefix, homolog_col = names[taxid]
    type_col = types[taxid]
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
    return _finish(df[target_col], df[context_col], df[type_col], score)


def _parse_hcop(df: pd.DataFrame, symbol_cols: dict[int, str], target: Species, context: Species) -> pd.DataFrame:
    support = None
    if "support" in df.columns:
        entries = df["support"].astype("string").fillna("")
        support = entries.str.split(",").map(lambda items: sum(bool(s.strip()) for s in items)).astype(float)
    return _finish(df[symbol_cols[target.taxid]], df[symbol_cols[context.taxid]], None, support)


def _parse_mgi(df: pd.DataFrame, norm: dict[str, str], target: Species, context: Species) -> pd.DataFrame:
    table = pd.DataFrame(
        {
            "key": df[norm["db class key"]].astype(str).str.strip(),
            "taxid": pd.to_numeric(df[norm["ncbi taxon id"]], errors="coerce"),
            "symbol": _clean_symbols(df[norm["symbol"]]),
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
    return _finish(pairs["symbol_t"], pairs["symbol_c"], None, None)


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
        norm.setdefault(_norm(column), column)
    if {"target gene", "context gene"} <= norm.keys():
        types = df[norm["homology type"]].astype(object) if "homology type" in norm else None
        score = df[norm["score"]] if "score" in norm else None
        return _finish(df[norm["target gene"]], df[norm["context gene"]], types, score)
    if {"db class key", "ncbi taxon id", "symbol"} <= norm.keys():
        return _parse_mgi(df, norm, target, context)
    symbol_cols = {}
    for key, column in norm.items():
        if (m := _HCOP_SYMBOL.match(key)) and (sp := lookup_species(m["sp"])) is not None:
            symbol_cols[sp.taxid] = column
    if len(symbol_cols) >= 2:
        if target.taxid in symbol_cols and context.taxid in symbol_cols:
            return _parse_hcop(df, symbol_cols, target, context)
        names = ", ".join(sorted(lookup_species(t).name for t in symbol_cols))
        raise ValueError(f"This HCOP table holds {names} symbols, not {target.name} and {context.name}.")
    if any(_ENSEMBL_TYPE.match(key) for key in norm):
        return _parse_ensembl(df, norm, target, context)
    raise ValueError(
        f"Unrecognised homology table with columns {list(df.columns)[:12]}. Accepted formats: {ACCEPTED_FORMATS}."
    )
