"""Public entry point for homology tables: pick a source, parse it, return the tidy table."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from importlib.resources import files
from pathlib import Path
from typing import Literal

import pandas as pd

from ._homology_formats import TIDY_COLUMNS, parse_homology_frame, read_table_file
from ._mgi import cached_mgi_report, default_cache_dir, mgi_report
from ._mygene import mygene_homology
from ._species import Species, resolve_species

logger = logging.getLogger(__name__)

# Ensembl BioMart human<->mouse orthologs, redistributed in the sample data of the MIT-licensed ``came`` package.
OFFLINE_TABLE = "ensembl_human2mouse_orthologs.csv.gz"
_OFFLINE_TAXA = frozenset({9606, 10090})
_MGI_TAXA = frozenset({9606, 10090, 10116, 7955})
_NAMED_SOURCES = ("auto", "offline", "mgi", "mygene")

HomologySource = Literal["auto", "offline", "mgi", "mygene"] | str | Path | pd.DataFrame


def _offline_table_path() -> Path:
    return Path(str(files("speciesvi.pp") / "data" / OFFLINE_TABLE))


def homology_table(
    target_species: str | int,
    context_species: str | int,
    source: HomologySource = "auto",
    cache_dir: str | Path | None = None,
    *,
    genes: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Homologous gene pairs between a target and a context species, as a tidy table.

    Parameters
    ----------
    target_species, context_species
        Common name (``"human"``, ``"mouse"``, ``"rat"``, ``"zebrafish"``, ...) or NCBI taxon id (``9606``,
        ``10090``, ...) of the species whose data is aligned (target) and of the annotated reference (context).
    source
        Where the homology comes from:

        - ``"auto"``: the offline table for human/mouse (either direction); otherwise the MGI report if it is
          already cached; otherwise a ``ValueError`` naming the alternatives. Never uses the network.
        - ``"offline"``: the bundled Ensembl BioMart human<->mouse table (no network; from the sample data of the
          MIT-licensed ``came`` package).
        - ``"mgi"``: the MGI report ``HOM_AllOrganism.rpt`` (human, mouse, rat, zebrafish), downloaded once into
          ``cache_dir`` and reused.
        - ``"mygene"``: MyGene.info (HomoloGene groups) for any pair of NCBI taxa; needs ``genes`` and the
          optional ``mygene`` package.
        - a path to, or a :class:`~pandas.DataFrame` of, an Ensembl BioMart export, an HGNC HCOP export, an MGI
          ``HOM_AllOrganism.rpt`` report or an already tidy table; the format is recognised by its columns and the
          orientation (which side is the target) by its species columns.
    cache_dir
        Folder of the MGI download; default ``$SPECIESVI_CACHE_DIR`` or ``~/.cache/speciesvi``.
    genes
        Target gene symbols to look up; required for ``source="mygene"``, ignored otherwise.

    Returns
    -------
    One row per homologous pair with the columns ``target_gene``, ``context_gene``, ``homology_type``
    (``"one2one"``, ``"one2many"`` or ``"many2many"``; as in Ensembl, ``"one2many"`` covers both directions) and
    ``score`` (conservation score of Ensembl tables, number of supporting resources of HCOP tables, NaN
    otherwise; higher is better). Symbols are kept exactly as the source spells them. ``DataFrame.attrs`` records
    the species and the source.

    Raises
    ------
    ValueError
        Unknown species, identical species, an unrecognised table format or no usable source.
    ConnectionError
        ``"mgi"`` or ``"mygene"`` without network.

    Examples
    --------
    >>> import speciesvi
    >>> table = speciesvi.pp.homology_table("human", "mouse")
    >>> table.columns.tolist()
    ['target_gene', 'context_gene', 'homology_type', 'score']
    >>> table.loc[table["target_gene"] == "INS", ["context_gene", "homology_type"]].values.tolist()
    [['Ins2', 'one2many'], ['Ins1', 'one2many']]
    """
    target = resolve_species(target_species, argument="target_species")
    context = resolve_species(context_species, argument="context_species")
    if target.taxid == context.taxid:
        raise ValueError(f"target_species and context_species are both {target.name}.")

    if isinstance(source, pd.DataFrame):
        label = "DataFrame"
        table = parse_homology_frame(source, target, context)
    elif isinstance(source, Path) or (isinstance(source, str) and source not in _NAMED_SOURCES):
        path = Path(source).expanduser()
        if not path.is_file():
            raise ValueError(
                f"source={str(source)!r} is neither one of {list(_NAMED_SOURCES)} nor an existing file; pass a "
                "named source, a homology table file or a DataFrame."
            )
        label = str(path)
        table = parse_homology_frame(read_table_file(path), target, context)
    else:
        label, table = _named_source(str(source), target, context, cache_dir, genes)

    table = table.loc[:, list(TIDY_COLUMNS)].reset_index(drop=True)
    table.attrs.update({"target_species": target.name, "context_species": context.name, "source": label})
    counts = table["homology_type"].value_counts()
    logger.info(
        "homology_table(%s -> %s, source=%s): %d pairs (%s)",
        target.name,
        context.name,
        label,
        len(table),
        ", ".join(f"{counts.get(t, 0)} {t}" for t in ("one2one", "one2many", "many2many")),
    )
    return table


def _named_source(
    source: str, target: Species, context: Species, cache_dir: str | Path | None, genes: Iterable[str] | None
) -> tuple[str, pd.DataFrame]:
    """Resolve ``"auto"`` and load one of the named sources; returns (label, tidy table)."""
    pair = {target.taxid, context.taxid}
    if source == "auto":
        if pair <= _OFFLINE_TAXA:
            source = "offline"
        elif pair <= _MGI_TAXA and cached_mgi_report(cache_dir) is not None:
            source = "mgi"
        else:
            folder = cache_dir if cache_dir is not None else default_cache_dir()
            raise ValueError(
                f"No offline homology table for {target.name} -> {context.name} and no cached MGI report in "
                f"{folder}. Use source='mgi' (downloads the MGI report once; human, mouse, rat, zebrafish), "
                "source='mygene' with genes=... (any NCBI taxa; needs network and the mygene package), or pass an "
                "Ensembl BioMart / HCOP / MGI file or DataFrame as source."
            )
    if source == "offline":
        if not pair <= _OFFLINE_TAXA:
            raise ValueError(
                f"The offline table covers human<->mouse only, not {target.name} -> {context.name}; use "
                "source='mgi', source='mygene' or a homology file."
            )
        path = _offline_table_path()
        return f"offline:{OFFLINE_TABLE}", parse_homology_frame(read_table_file(path), target, context)
    if source == "mgi":
        if not pair <= _MGI_TAXA:
            raise ValueError(
                f"The MGI report covers human, mouse, rat and zebrafish, not {target.name} -> {context.name}; use "
                "source='mygene' or an Ensembl BioMart / HCOP file."
            )
        path = mgi_report(cache_dir)
        return f"mgi:{path}", parse_homology_frame(read_table_file(path), target, context)
    if genes is None:
        raise ValueError("source='mygene' needs genes=... (the target gene symbols to look up), e.g. adata.var_names.")
    return "mygene", mygene_homology(genes, target, context)
