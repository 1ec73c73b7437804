"""Pre-processing: homology tables, gene translation, gene selection and data-level neighbours (no torch needed)."""

from ._fingerprint import adata_fingerprint
from ._homology import homology_table
from ._neighbors import homolog_neighbors
from ._select import select_genes
from ._translate import translate_genes

__all__ = ["adata_fingerprint", "homolog_neighbors", "homology_table", "select_genes", "translate_genes"]
