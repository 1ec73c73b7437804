"""Build the embedded Baron et al. (2016) demo pair shipped in ``speciesvi.datasets``.

Run from the repository root with the full files in ``../shared/data``::

    python scripts/make_demo_data.py ../shared/data

The demo keeps every cell and, per species, the union of its 4,000 most variable genes
(scanpy ``seurat_v3`` on raw counts, ``donor`` batches) and the one-to-one orthologs of the
other species' 4,000 most variable genes, so that the homologous gene set is large.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp

N_TOP = 4000
OBS_COLUMNS = ["cell_ontology_class", "cell_type1", "donor"]
OUT_DIR = Path(__file__).parents[1] / "src" / "speciesvi" / "datasets" / "data"


def _hvg(adata: ad.AnnData) -> set[str]:
    table = sc.pp.highly_variable_genes(adata, flavor="seurat_v3", n_top_genes=N_TOP, batch_key="donor", inplace=False)
    return set(adata.var_names[table["highly_variable"].to_numpy()])


def main(data_dir: Path) -> None:
    """Write the demo pair from the full files in ``data_dir``."""
    mouse = ad.read_h5ad(data_dir / "baron_mouse_pancreas.h5ad")
    human = ad.read_h5ad(data_dir / "baron_human_pancreas.h5ad")
    orthologs = pd.read_csv(data_dir / "ensembl_human2mouse_orthologs.csv.gz")
    orthologs = orthologs[orthologs["human.homology.type"] == "ortholog_one2one"]
    human_to_mouse = dict(zip(orthologs["human.gene.name"], orthologs["gene.name"], strict=True))
    mouse_to_human = {m: h for h, m in human_to_mouse.items()}

    hvg_mouse, hvg_human = _hvg(mouse), _hvg(human)
    mouse_genes = hvg_mouse | {human_to_mouse[g] for g in hvg_human if human_to_mouse.get(g) in mouse.var_names}
    human_genes = hvg_human | {mouse_to_human[g] for g in hvg_mouse if mouse_to_human.get(g) in human.var_names}

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name, adata, genes in (("mouse", mouse, mouse_genes), ("human", human, human_genes)):
        subset = adata[:, sorted(genes)].copy()
        subset.X = sp.csr_matrix(subset.X, dtype=np.float32)
        subset.obs = subset.obs[OBS_COLUMNS].copy()
        subset.uns = {}
        subset.write_h5ad(OUT_DIR / f"baron_{name}_demo.h5ad", compression="gzip")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parents[2] / "shared" / "data")
