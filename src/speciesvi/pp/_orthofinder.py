"""OrthoFinder results as homology tables: ``Orthologues_<A>/<A>__v__<B>.tsv`` and ``Orthogroups.tsv``.

OrthoFinder names a species column after the proteome file it was given (``Mus_musculus.GRCm39.pep.all``,
``mouse``, ``hamster_proteins``). A column belongs to a species when its label, its first two words or its first
word is a species name speciesvi knows or an NCBI taxon id (``10036``, ``txid10036``). In a file of two species it
is enough that one column is recognised: the other column, if its label names no third species, is then the other
species (e.g. a ``Cavia_porcellus`` column for taxon 10141, which speciesvi has no name for).

Each row lists comma-separated genes of the two species; every target gene of a row is paired with every context
gene of the row. The homology type follows the number of genes on each side (``one2one`` when both hold one gene,
``many2many`` when both hold several, ``one2many`` otherwise; a gene listed in several rows counts all its
partners). Genes are kept as OrthoFinder writes them: the identifiers of the proteome FASTA headers. Give
OrthoFinder proteomes whose headers are the gene symbols of your data (one protein per gene, e.g. the longest
isoform, as OrthoFinder's ``primary_transcript.py`` keeps), or map the identifiers to symbols before
translating genes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from ._homology_tidy import clean_symbols, finish_table
from ._species import label_taxid

if TYPE_CHECKING:
    from ._species import Species

# Normalised names of the columns of Orthogroups.tsv, orthologue and HOG (N0.tsv) files that hold no genes.
_META_COLUMNS = frozenset({"orthogroup", "hog", "og", "gene tree parent clade"})


def is_orthofinder(norm: dict[str, str]) -> bool:
    """Whether the normalised column names are those of an OrthoFinder orthologue, orthogroup or HOG table."""
    return ("orthogroup" in norm or "hog" in norm) and len(norm.keys() - _META_COLUMNS) >= 2


def _species_columns(norm: dict[str, str], target: Species, context: Species) -> tuple[str, str]:
    """The (target, context) gene columns, recognised by their labels."""
    columns = [column for key, column in norm.items() if key not in _META_COLUMNS]
    taxids = {column: label_taxid(column) for column in columns}
    found = {sp.taxid: [column for column in columns if taxids[column] == sp.taxid] for sp in (target, context)}
    for sp in (target, context):
        if len(found[sp.taxid]) > 1:
            raise ValueError(
                f"This OrthoFinder table has several columns for {sp.name}: {found[sp.taxid]}; keep one of them."
            )
    if len(columns) == 2:
        # Two species: one recognised column decides the orientation, if the other names no third species.
        t_cols, c_cols = found[target.taxid], found[context.taxid]
        unnamed = [column for column in columns if taxids[column] is None]
        if t_cols and not c_cols:
            c_cols = unnamed
        elif c_cols and not t_cols:
            t_cols = unnamed
        found = {target.taxid: t_cols, context.taxid: c_cols}
    if not found[target.taxid] or not found[context.taxid]:
        raise ValueError(
            f"Cannot tell which columns of this OrthoFinder table hold the {target.name} and the {context.name} "
            f"genes (species columns: {columns}). Rename the columns after the species, e.g. 'hamster' and "
            "'mouse' or their NCBI taxon ids ('10036', '10090'); in a file of two species one recognised column "
            "is enough."
        )
    return found[target.taxid][0], found[context.taxid][0]


def _split_genes(values: pd.Series) -> pd.Series:
    """Each cell as a list of gene identifiers (OrthoFinder separates them by ``", "``)."""
    return values.astype("string").fillna("").str.split(",")


def parse_orthofinder(df: pd.DataFrame, norm: dict[str, str], target: Species, context: Species) -> pd.DataFrame:
    """Tidy homology table from an OrthoFinder orthologue, orthogroup or HOG table.

    Parameters
    ----------
    df
        The table as read from the file (strings).
    norm
        Normalised column name -> column name of ``df``.
    target, context
        The two species; their columns are recognised by label (see the module docstring).

    Returns
    -------
    Tidy table; the homology type of a pair follows the numbers of genes its two genes are paired with, the score
    is NaN.

    Examples
    --------
    >>> import pandas as pd
    >>> from speciesvi.pp._homology_tidy import norm_column
    >>> from speciesvi.pp._species import resolve_species
    >>> df = pd.DataFrame({"Orthogroup": ["OG1", "OG2"], "hamster": ["Gcg", "Ins"], "mouse": ["Gcg", "Ins1, Ins2"]})
    >>> norm = {norm_column(c): c for c in df.columns}
    >>> table = parse_orthofinder(df, norm, resolve_species(10036), resolve_species("mouse"))
    >>> table[["target_gene", "context_gene", "homology_type"]].values.tolist()
    [['Gcg', 'Gcg', 'one2one'], ['Ins', 'Ins1', 'one2many'], ['Ins', 'Ins2', 'one2many']]
    """
    target_col, context_col = _species_columns(norm, target, context)
    pairs = pd.DataFrame({"t": _split_genes(df[target_col]), "c": _split_genes(df[context_col])})
    pairs = pairs.explode("t").explode("c")
    pairs = pairs.assign(t=clean_symbols(pairs["t"]), c=clean_symbols(pairs["c"])).dropna()
    return finish_table(pairs["t"], pairs["c"], None, None)
