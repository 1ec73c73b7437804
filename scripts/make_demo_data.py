"""Build the embedded Baron et al. (2016) demo pair shipped in ``speciesvi.datasets``.

Run from the repository root with the full files in ``../shared/data``::

    python scripts/make_demo_data.py ../shared/data

The demo keeps every cell and every gene of the full files (mouse 1,886 x 14,877, human 2,142 x 20,125) as
raw counts in sparse float32 CSR, with the obs columns ``cell_ontology_class``, ``cell_type1`` and ``donor``.
Everything is gzip-compressed (level 9); the CSR arrays are written in large chunks, the column indices with
HDF5's byte-shuffle filter, which keeps the human file near 6 MB instead of 8.7 MB (plain ``write_h5ad``).
Both are standard HDF5 filters, so ``anndata.read_h5ad`` reads the files as usual. No genes are selected
here: that is the user's step, :func:`speciesvi.pp.select_genes`, run after
:func:`speciesvi.pp.translate_genes`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import scipy.sparse as sp

OBS_COLUMNS = ["cell_ontology_class", "cell_type1", "donor"]
OUT_DIR = Path(__file__).parents[1] / "src" / "speciesvi" / "datasets" / "data"
FILES = {"mouse": "baron_mouse_pancreas.h5ad", "human": "baron_human_pancreas.h5ad"}
GZIP = {"compression": "gzip", "compression_opts": 9}
CHUNK = 2**18


def _write(adata: ad.AnnData, path: Path) -> None:
    """``write_h5ad`` with gzip 9, but the CSR matrix in large chunks and its indices byte-shuffled."""
    matrix = adata.X
    ad.AnnData(obs=adata.obs, var=adata.var).write_h5ad(path, **GZIP)
    with h5py.File(path, "r+") as file:
        group = file.create_group("X")  # anndata's on-disk csr_matrix, encoding version 0.1.0
        group.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": matrix.shape})
        for key in ("data", "indices", "indptr"):
            values = getattr(matrix, key)
            chunks = (max(1, min(values.size, CHUNK)),)
            group.create_dataset(key, data=values, chunks=chunks, shuffle=key == "indices", **GZIP)


def main(data_dir: Path) -> None:
    """Write the demo pair from the full files in ``data_dir``."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name, file in FILES.items():
        full = ad.read_h5ad(data_dir / file)
        demo = ad.AnnData(
            X=sp.csr_matrix(full.X, dtype=np.float32),
            obs=full.obs[OBS_COLUMNS].copy(),
            var=full.var[[]].copy(),
        )
        path = OUT_DIR / f"baron_{name}_demo.h5ad"
        _write(demo, path)
        back = ad.read_h5ad(path)
        assert back.shape == full.shape and (back.X != demo.X).nnz == 0 and back.obs.equals(demo.obs)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parents[2] / "shared" / "data")
