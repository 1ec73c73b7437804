"""Public entry point for homology tables: pick a source, parse it, return the tidy table."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from importlib.resources import files
from pathlib import Path
from typing import Literal

import pandas as pd

from ._eggnog import eggnog_homology, is_emapper_file, read_emapper
from ._homology_formats import TIDY_COLUMNS, parse_homology_frame, read_table_file
from ._mgi import cached_mgi_report, default_cache_dir, mgi_report
from ._mygene import TABLE_FILES_HINT, mygene_homology
from ._species import Species, resolve_species

logger = logging.getLogger(__name__)

# Ensembl BioMart human<->mouse orthologs, redistributed in the sample data of the MIT-licensed ``came`` package.
OFFLINE_TABLE = "ensembl_human2mouse_orthologs.csv.gz"
_OFFLINE_TAXA = frozenset({9606, 10090})
_MGI_TAXA = frozenset({9606, 10090, 10116, 7955})
_NAMED_SOURCES = ("auto", "offline", "mgi", "mygene")

HomologySource = Literal["auto", "offline", "mgi", "mygene"] | str | Path | pd.DataFrame | tuple[str | Path, str | Path]


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
        Species whose data is aligned (target) and annotated reference (context): a common name (``"human"``,
        ``"mouse"``, ``"hamster"``, ``"zebrafish"``, ...) or any NCBI taxon id, as an int or a numeric string
        (``10036``, ``"10036"``, ``"taxon:10036"``). A taxon speciesvi has no name for is called
        ``"taxon <id>"``.
    source
        Where the homology comes from:

        - ``"auto"``: the offline table for human/mouse (either direction); otherwise the MGI report if it is
          already cached; otherwise a ``ValueError`` naming the alternatives. Never uses the network.
        - ``"offline"``: the bundled Ensembl BioMart human<->mouse table (no network; from the sample data of the
          MIT-licensed ``came`` package).
        - ``"mgi"``: the MGI report ``HOM_AllOrganism.rpt`` (human, mouse, rat, zebrafish), downloaded once into
          ``cache_dir`` and reused.
        - ``"mygene"``: MyGene.info (HomoloGene groups) for any pair of NCBI taxon ids; needs ``genes``, the
          optional ``mygene`` package and, the first time, network. The answer is cached in ``cache_dir`` and
          reused for the same genes. HomoloGene covers 21 species (human, chimpanzee, macaque, dog, cow, mouse,
          rat, chicken, frog, zebrafish, fly, mosquito, worm, yeasts, Arabidopsis, rice); for other taxa, such as
          the golden hamster, a ``ValueError`` asks for a table file.
        - a path to, or a :class:`~pandas.DataFrame` of, an Ensembl BioMart export (any species pair), an
          OrthoFinder ``Orthologues_<A>__v__<B>.tsv`` or ``Orthogroups.tsv`` file, an HGNC HCOP export, an MGI
          ``HOM_AllOrganism.rpt`` report or an already tidy table; the format is recognised by its columns and the
          orientation (which side is the target) by its species columns, whose labels may be species names,
          scientific names (``Mesocricetus_auratus``), Ensembl prefixes (``mauratus``) or taxon ids. A taxon
          speciesvi has no name for takes the one species column speciesvi cannot name: the one such homolog
          species of an Ensembl export, or the other column of a two-species OrthoFinder file.
        - a pair ``(target_file, context_file)`` of eggNOG-mapper ``.emapper.annotations`` files, one per species:
          ``Preferred_name`` symbols sharing an eggNOG orthologous group at the narrowest well-covered taxonomic
          level of both files are homologs (the level is logged and kept in ``attrs["eggnog_level"]``).
    cache_dir
        Folder of the MGI download and of the MyGene.info answers; default ``$SPECIESVI_CACHE_DIR`` or
        ``~/.cache/speciesvi``.
    genes
        Target gene symbols to look up (e.g. ``adata.var_names``); required for ``source="mygene"``, ignored
        otherwise.

    Returns
    -------
    One row per homologous pair with the columns ``target_gene``, ``context_gene``, ``homology_type``
    (``"one2one"``, ``"one2many"`` or ``"many2many"``; as in Ensembl, ``"one2many"`` covers both directions) and
    ``score`` (conservation score of Ensembl tables, number of supporting resources of HCOP tables, NaN
    otherwise; higher is better). Every homology type is kept: which ones are used is the ``policy`` of
    :func:`~speciesvi.pp.translate_genes` (one-to-one only by default). Symbols are kept exactly as the source
    spells them. ``DataFrame.attrs`` records the species, their taxon ids and the source.

    Raises
    ------
    TypeError
        A species that is neither a string nor an integer.
    ValueError
        A species that is neither a known name nor an NCBI taxon id, identical species, an unrecognised table
        format, missing columns, no usable source, or MyGene.info without homologs for the pair.
    ConnectionError
        ``"mgi"`` or ``"mygene"`` without network (and nothing cached).

    Examples
    --------
    >>> import speciesvi
    >>> table = speciesvi.pp.homology_table("human", "mouse")
    >>> table.columns.tolist()
    ['target_gene', 'context_gene', 'homology_type', 'score']
    >>> table.loc[table["target_gene"] == "INS", ["context_gene", "homology_type"]].values.tolist()
    [['Ins2', 'one2many'], ['Ins1', 'one2many']]

    Any species pair from an ortholog file, e.g. golden hamster (taxon 10036) to mouse from OrthoFinder:

    >>> table = speciesvi.pp.homology_table(  # doctest: +SKIP
    ...     10036, "mouse", source="Orthologues/Orthologues_hamster/hamster__v__mouse.tsv"
    ... )
    """
    target = resolve_species(target_species, argument="target_species")
    context = resolve_species(context_species, argument="context_species")
    if target.taxid == context.taxid:
        raise ValueError(f"target_species and context_species are both {target.name}.")

    extra: dict[str, str] = {}
    if isinstance(source, pd.DataFrame):
        label = "DataFrame"
        table = parse_homology_frame(source, target, context)
    elif isinstance(source, tuple | list):
        label, table = _eggnog_source(source, target, context)
        extra["eggnog_level"] = table.attrs["eggnog_level"]
    elif isinstance(source, Path) or (isinstance(source, str) and source not in _NAMED_SOURCES):
        path = _existing_file(source)
        if is_emapper_file(path):
            raise ValueError(
                f"{path} is eggNOG-mapper output, which annotates one species; pass the files of both species as "
                "source=(target_annotations, context_annotations)."
            )
        label = str(path)
        table = parse_homology_frame(read_table_file(path), target, context)
    elif isinstance(source, str):
        label, table = _named_source(source, target, context, cache_dir, genes)
    else:
        raise TypeError(
            f"source must be one of {list(_NAMED_SOURCES)}, a file path, a DataFrame or a (target, context) pair "
            f"of eggNOG-mapper files, not {type(source).__name__}."
        )

    table = table.loc[:, list(TIDY_COLUMNS)].reset_index(drop=True)
    table.attrs = {
        "target_species": target.name,
        "context_species": context.name,
        "target_taxid": target.taxid,
        "context_taxid": context.taxid,
        "source": label,
        **extra,
    }
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


def _existing_file(source: str | Path) -> Path:
    path = Path(source).expanduser()
    if not path.is_file():
        raise ValueError(
            f"source={str(source)!r} is neither one of {list(_NAMED_SOURCES)} nor an existing file; pass a "
            "named source, a homology table file or a DataFrame."
        )
    return path


def _eggnog_source(source: tuple | list, target: Species, context: Species) -> tuple[str, pd.DataFrame]:
    """Read the (target, context) eggNOG-mapper files; returns (label, tidy table)."""
    if len(source) != 2:
        raise ValueError(
            f"A sequence as source must hold two eggNOG-mapper annotation files, the {target.name} one then the "
            f"{context.name} one; got {len(source)} items."
        )
    paths = [_existing_file(item) for item in source]
    table = eggnog_homology(read_emapper(paths[0]), read_emapper(paths[1]))
    return f"eggnog:{paths[0]},{paths[1]}", table


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
                "source='mygene' with genes=... (HomoloGene species; needs network and the mygene package), or "
                "pass an Ensembl BioMart / OrthoFinder / HCOP / MGI file or DataFrame, or two eggNOG-mapper files, "
                "as source."
            )
    if source == "offline":
        if not pair <= _OFFLINE_TAXA:
            raise ValueError(
                f"The offline table covers human<->mouse only, not {target.name} -> {context.name}; use "
                f"source='mgi', source='mygene' or {TABLE_FILES_HINT.removeprefix('pass ')}."
            )
        path = _offline_table_path()
        return f"offline:{OFFLINE_TABLE}", parse_homology_frame(read_table_file(path), target, context)
    if source == "mgi":
        if not pair <= _MGI_TAXA:
            raise ValueError(
                f"The MGI report covers human, mouse, rat and zebrafish, not {target.name} -> {context.name}; use "
                f"source='mygene' or {TABLE_FILES_HINT.removeprefix('pass ')}."
            )
        path = mgi_report(cache_dir)
        return f"mgi:{path}", parse_homology_frame(read_table_file(path), target, context)
    if source != "mygene":
        raise ValueError(f"Unknown source {source!r}; use one of {list(_NAMED_SOURCES)}, a file or a DataFrame.")
    if genes is None:
        raise ValueError("source='mygene' needs genes=... (the target gene symbols to look up), e.g. adata.var_names.")
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return "mygene", mygene_homology(genes, target, context, cache_dir=folder)
