"""The Baron et al. (2016) pancreas pair, mouse and human."""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

import anndata as ad

logger = logging.getLogger(__name__)

_EMBEDDED = {"mouse": "baron_mouse_demo.h5ad", "human": "baron_human_demo.h5ad"}
_FULL = {"mouse": "baron_mouse_pancreas.h5ad", "human": "baron_human_pancreas.h5ad"}
_REQUIRED_OBS = ("cell_ontology_class", "donor")


def _read(file: Path) -> ad.AnnData:
    adata = ad.read_h5ad(file)
    missing = [key for key in _REQUIRED_OBS if key not in adata.obs]
    if missing:
        raise ValueError(f"{file} lacks the obs columns {missing}; expected the Baron et al. (2016) pancreas files.")
    return adata


def baron_pancreas(path: str | Path | None = None) -> tuple[ad.AnnData, ad.AnnData]:
    """Load the Baron et al. (2016) pancreas data, mouse (context) and human (target).

    Provenance: Baron, M. et al. *A Single-Cell Transcriptomic Map of the Human and Mouse Pancreas
    Reveals Inter- and Intra-cell Population Structure.* Cell Systems 3, 346-360 (2016), GEO accession
    GSE84133, inDrop, raw UMI counts. The files were redistributed in the sample data of the
    MIT-licensed ``came==0.1.13`` package on PyPI. The embedded demo pair holds the full data: all cells
    and all genes (mouse 1,886 x 14,877, human 2,142 x 20,125), so gene selection is left to the user as it
    would be on their own data: run :func:`speciesvi.pp.translate_genes` and then
    :func:`speciesvi.pp.select_genes` before training (``scripts/make_demo_data.py`` rebuilds the files).

    Parameters
    ----------
    path
        A directory holding the full files ``baron_mouse_pancreas.h5ad`` and ``baron_human_pancreas.h5ad``
        (all genes, all ``obs`` columns). ``None`` loads the embedded demo pair shipped with the package (the
        same cells and genes, ``obs`` reduced to the three columns below).

    Returns
    -------
    mouse, human : anndata.AnnData
        Raw counts in ``.X`` (sparse), coarse labels in ``obs["cell_ontology_class"]``, fine labels in
        ``obs["cell_type1"]`` and donors in ``obs["donor"]``.

    Examples
    --------
    >>> import speciesvi
    >>> mouse, human = speciesvi.datasets.baron_pancreas()
    >>> mouse.shape, human.shape
    ((1886, 14877), (2142, 20125))
    """
    if path is None:
        root = resources.files("speciesvi.datasets") / "data"
        with resources.as_file(root) as folder:
            return _read(folder / _EMBEDDED["mouse"]), _read(folder / _EMBEDDED["human"])
    folder = Path(path)
    files = {species: folder / name for species, name in _FULL.items()}
    absent = [str(file) for file in files.values() if not file.is_file()]
    if absent:
        raise ValueError(
            f"Cannot find {absent}. Pass the directory holding {list(_FULL.values())}, or path=None for the embedded demo."
        )
    return _read(files["mouse"]), _read(files["human"])
