"""Write ``tests/data/legacy_target``: a TargetVI saved in the layout of speciesvi before self-contained saves.

Until commit f9bca48, ``TargetVI.save`` wrote the target model to ``model.pt`` without the context's latent
statistics, decoder or labels, and the context model to the sub-folder ``context/``; ``TargetVI.load`` needed
the context AnnData to rebuild them. ``tests/test_target_save.py`` checks that such a folder still loads. This
script must run against the source of that commit (``git archive f9bca48 src | tar -x -C /tmp/legacy``, then
``PYTHONPATH=/tmp/legacy/src python scripts/make_legacy_target_fixture.py``); with later code it writes the new
layout and refuses.

Output (a few hundred KB): ``model/`` (``model.pt`` and ``context/model.pt``), ``target.h5ad`` and
``context.h5ad`` (the two AnnData objects, neighbours included) and ``labels.csv`` (``transfer_labels`` of the
saved model as the old code computed it: label, confidence).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import scvi

import speciesvi

OUT_DIR = Path(__file__).parents[1] / "tests" / "data" / "legacy_target"
N_GENES, N_SHARED = 60, 50


def _species(prefix: str, seed: int):
    scvi.settings.seed = seed
    adata = scvi.data.synthetic_iid(batch_size=80, n_genes=N_GENES, n_batches=2, n_labels=3)
    adata.var_names = [f"{prefix}{i}" for i in range(N_GENES)]
    adata.obs["labels"] = adata.obs["labels"].astype(str)
    adata.obs["batch"] = adata.obs["batch"].astype(str)
    for key in ("accessibility", "protein_expression"):
        del adata.obsm[key]
    del adata.uns["protein_names"]
    return adata


def main(out_dir: Path) -> None:
    """Train the pair, save the TargetVI in the earlier layout and write the fixture files to ``out_dir``."""
    context, target = _species("ctx_", 1), _species("TGT_", 2)
    table = pd.DataFrame(
        {
            "target_gene": [f"TGT_{i}" for i in range(N_SHARED)],
            "context_gene": [f"ctx_{i}" for i in range(N_SHARED)],
            "homology_type": "one2one",
        }
    )
    speciesvi.pp.translate_genes(target, table, context=context)
    speciesvi.pp.homolog_neighbors(target, context, labels_key="labels", n_neighbors=20, n_vote=5)
    speciesvi.ContextVI.setup_anndata(context, batch_key="batch", labels_key="labels")
    scvi.settings.seed = 0
    context_model = speciesvi.ContextVI(
        context,
        n_latent=4,
        n_hidden_outer=(16,),
        n_hidden_inner=(16,),
        n_hidden_library=(8,),
        n_hidden_decoder=(16,),
    )
    context_model.train(max_epochs=2, enable_progress_bar=False)
    speciesvi.TargetVI.setup_anndata(target, batch_key="batch")
    model = speciesvi.TargetVI(target, context_model, n_candidates=5, n_hidden_library=(8,), n_hidden_decoder=(16,))
    model.train(max_epochs=2, enable_progress_bar=False)
    labels = model.transfer_labels(n_candidates=20, top_k=5)
    model.save(out_dir / "model", overwrite=True)
    if not (out_dir / "model" / "context" / "model.pt").is_file():
        raise SystemExit("This speciesvi writes self-contained TargetVI folders; run against commit f9bca48's src.")
    target.write_h5ad(out_dir / "target.h5ad", compression="gzip")
    context.write_h5ad(out_dir / "context.h5ad", compression="gzip")
    labels[["label", "confidence"]].to_csv(out_dir / "labels.csv")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    main(parser.parse_args().out)
