"""The outputs of a TargetVI that must survive save and load, computed alike before saving and in a fresh process.

``python target_save_worker.py FOLDER OUT.npz`` loads ``FOLDER/model`` with the target AnnData ``FOLDER/target.h5ad``
and nothing of its context (no context model, no context data), then saves :func:`outputs` to ``OUT.npz``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anndata
import numpy as np

import speciesvi


def outputs(model: speciesvi.TargetVI) -> dict[str, np.ndarray]:
    """Latent, label transfer (two context columns), similarities, a cell's ranking and the homolog LFC table."""
    out = {"latent": model.get_latent_representation()}
    labels = model.transfer_labels(n_candidates=30, top_k=10, key_added="saved")
    for column in ("label", "confidence", "novelty", "p_known", "vote_share"):
        out[f"labels_{column}"] = labels[column].to_numpy(dtype=str if column == "label" else float)
    group = model.transfer_labels(labels_key="group", n_candidates=30, top_k=10, key_added="group")
    out["group_label"] = group["label"].to_numpy(dtype=str)
    out["group_confidence"] = group["confidence"].to_numpy(dtype=float)
    out["similarity"], out["similarity_index"] = model.similarity(indices=np.arange(20), n_candidates=30)
    ranking = model.transfer_labels_cell(0, labels_key=["labels", "flag"])
    out["ranking_cells"] = ranking.index.to_numpy(dtype=str)
    out["ranking_labels"] = ranking["labels"].to_numpy(dtype=str)
    out["ranking_flag"] = ranking["flag"].to_numpy(dtype=str)
    out["ranking_similarity"] = ranking["similarity"].to_numpy(dtype=float)
    lfc = model.homolog_lfc(
        labels_key="labels", n_samples=2000, random_state=0, progress_bar=False, precision="float32"
    )
    for column in lfc.columns:
        values = lfc[column]
        numeric = values.dtype.kind in "fiub"
        out[f"lfc_{column}"] = values.to_numpy(dtype=float if numeric else str)
    return out


def main(folder: Path, out: Path) -> None:
    """Load the saved model without its context and save its outputs."""
    target = anndata.read_h5ad(folder / "target.h5ad")
    model = speciesvi.TargetVI.load(folder / "model", adata=target)
    if model.context_model is not None:
        raise SystemExit("the loaded TargetVI has a context model")
    np.savez(out, **outputs(model))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
