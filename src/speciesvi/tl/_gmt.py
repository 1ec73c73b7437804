"""Gene sets from GMT files."""

from __future__ import annotations

import gzip
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

logger = logging.getLogger(__name__)


def read_gmt(path: str | Path) -> dict[str, list[str]]:
    """Read gene sets from a GMT file.

    A GMT file holds one gene set per line, its fields separated by tabs: the set's name, a description
    (often a URL; ignored here) and the set's genes. Empty lines and lines starting with ``#`` are skipped;
    empty gene fields (trailing tabs) are dropped, and a gene listed twice in a set is kept once. A file whose
    name ends in ``.gz`` is read as gzip.

    Gene sets that work offline are GMT files the user has: MSigDB collections (``*.symbols.gmt`` from
    https://www.gsea-msigdb.org, human or mouse symbols), Enrichr libraries (the "Gene-set Library" downloads of
    https://maayanlab.cloud/Enrichr/#libraries are GMT files; their gene fields may carry a ``,1.0`` weight,
    which is stripped) or any hand-made file. speciesvi needs neither ``gseapy`` nor ``decoupler``. Online, with
    them installed, ``gseapy.get_library("KEGG_2021_Human")`` returns a dict of gene sets, usable directly, and
    decoupler's MSigDB resource (``decoupler.get_resource("MSigDB")`` in decoupler 1.x) is a long table with one row
    per gene and set (group the genes by set into a dict); write either to a GMT file once to use it offline.

    Parameters
    ----------
    path
        The GMT file.

    Returns
    -------
    dict
        Gene-set name to its genes (in file order).

    Raises
    ------
    ValueError
        For a malformed line (fewer than three tab-separated fields, an empty name, no genes) or a set name used
        twice; the message names the line.

    Examples
    --------
    >>> gene_sets = speciesvi.tl.read_gmt("h.all.v2024.1.Hs.symbols.gmt")  # MSigDB hallmarks, human symbols
    >>> len(gene_sets["HALLMARK_PANCREAS_BETA_CELLS"])
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"No GMT file at {str(path)!r}; pass the path of a gene-set file in GMT format.")
    opener = gzip.open if path.suffix == ".gz" else open
    gene_sets: dict[str, list[str]] = {}
    first_line: dict[str, int] = {}
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            fields = line.split("\t")
            where = f"{path.name}, line {number}"
            if len(fields) < 3:
                raise ValueError(
                    f"{where}: a GMT line needs at least three tab-separated fields (name, description, genes), "
                    f"got {len(fields)}: {line[:80]!r}. Separate the fields with tabs, not spaces."
                )
            name = fields[0].strip()
            if not name:
                raise ValueError(f"{where}: the gene-set name (first field) is empty.")
            if name in gene_sets:
                raise ValueError(
                    f"{where}: gene set {name!r} was already defined on line {first_line[name]}; set names must be "
                    "unique (rename or merge the sets)."
                )
            genes = [g.split(",")[0].strip() for g in fields[2:]]
            genes = list(dict.fromkeys(g for g in genes if g))
            if not genes:
                raise ValueError(f"{where}: gene set {name!r} lists no genes.")
            gene_sets[name] = genes
            first_line[name] = number
    if not gene_sets:
        raise ValueError(f"{path.name} holds no gene set; is it a GMT file (one tab-separated set per line)?")
    logger.info("read_gmt: %d gene sets from %s", len(gene_sets), path)
    return gene_sets


def as_gene_sets(gene_sets: Mapping[str, Iterable[str]] | str | Path) -> dict[str, list[str]]:
    if isinstance(gene_sets, str | Path):
        return read_gmt(gene_sets)
    if not isinstance(gene_sets, Mapping):
        raise TypeError(
            f"gene_sets must be a dict of gene-set name to gene symbols or the path of a GMT file, got "
            f"{type(gene_sets).__name__}."
        )
    out = {}
    for name, genes in gene_sets.items():
        if isinstance(genes, str) or not isinstance(genes, Iterable):
            raise TypeError(f"Gene set {name!r} must be a list of gene symbols, got {type(genes).__name__}.")
        out[str(name)] = list(dict.fromkeys(str(g) for g in genes))
    if not out:
        raise ValueError("gene_sets is empty; pass at least one gene set.")
    return out
