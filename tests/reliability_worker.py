"""Work run in fresh Python processes by tests/test_reliability.py: training that is killed, and seeded workflows.

``python reliability_worker.py kill DIR`` trains a context model (saved to DIR/context) and a TargetVI that writes
a checkpoint every epoch to DIR/checkpoints and is killed with SIGKILL in the middle of epoch ``KILL_EPOCH``.
``python reliability_worker.py workflow OUT.npz`` runs a seeded workflow and saves its outputs.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import scvi
import torch
from anndata import AnnData
from lightning.pytorch.callbacks import Callback
from scipy import sparse

import speciesvi
from speciesvi.train import ResumableCheckpoint

N_GENES, N_SHARED = 50, 40
EPOCHS, KILL_EPOCH = 6, 3
#: Marker genes of the synthetic cell types.
PROGRAMS = {"alpha": range(0, 8), "beta": range(8, 16), "gamma": range(16, 24)}
MODEL_KWARGS = {"n_latent": 4, "n_hidden_outer": (32,), "n_hidden_inner": (16,)}
TRAIN_KWARGS = {"batch_size": 32, "train_size": 1.0, "enable_progress_bar": False}


def species(prefix: str, seed: int, n_per_type: int = 40) -> AnnData:
    """Counts of a small synthetic species: three cell types with marker programs, two batches."""
    base = np.random.default_rng(0).gamma(2.0, 1.0, N_GENES)
    rng = np.random.default_rng(seed)
    blocks, labels, batches = [], [], []
    for cell_type, genes in PROGRAMS.items():
        profile = base * np.exp(rng.normal(0.0, 0.2, N_GENES))
        profile[list(genes)] *= 20.0
        for batch in range(2):
            library = np.exp(rng.normal(6.5, 0.3, n_per_type // 2))
            mu = library[:, None] * profile / profile.sum()
            blocks.append(rng.poisson(rng.gamma(5.0, mu / 5.0)))
            labels += [cell_type] * (n_per_type // 2)
            batches += [f"batch_{batch}"] * (n_per_type // 2)
    adata = AnnData(sparse.csr_matrix(np.vstack(blocks).astype(np.float32)))
    adata.var_names = [f"{prefix}{i}" for i in range(N_GENES)]
    adata.obs_names = [f"{prefix}cell{i}" for i in range(adata.n_obs)]
    adata.obs["labels"] = pd.Categorical(labels)
    adata.obs["batch"] = pd.Categorical(batches)
    return adata


def prepare() -> tuple[AnnData, AnnData]:
    """The synthetic context and target, translated, with data-level neighbours, set up for the models."""
    context, target = species("ctx_", 1), species("TGT_", 2)
    table = pd.DataFrame(
        {
            "target_gene": [f"TGT_{i}" for i in range(N_SHARED)],
            "context_gene": [f"ctx_{i}" for i in range(N_SHARED)],
            "homology_type": "one2one",
        }
    )
    speciesvi.pp.translate_genes(target, table)
    speciesvi.pp.homolog_neighbors(target, context, labels_key="labels", n_neighbors=30, n_vote=10)
    speciesvi.ContextVI.setup_anndata(context, batch_key="batch", labels_key="labels")
    speciesvi.TargetVI.setup_anndata(target, batch_key="batch")
    return context, target


def train_context(context: AnnData, epochs: int = 2) -> speciesvi.ContextVI:
    scvi.settings.seed = 0
    model = speciesvi.ContextVI(context, **MODEL_KWARGS)
    model.train(max_epochs=epochs, **TRAIN_KWARGS)
    return model


def train_target(
    target: AnnData, context_model: speciesvi.ContextVI, epochs: int = EPOCHS, callbacks=(), **kwargs
) -> speciesvi.TargetVI:
    scvi.settings.seed = 0
    model = speciesvi.TargetVI(target, context_model, n_candidates=10)
    model.train(max_epochs=epochs, callbacks=list(callbacks), **TRAIN_KWARGS, **kwargs)
    return model


class KillAt(Callback):
    """SIGKILL this process at the second minibatch of ``epoch`` (after the checkpoint of the epoch before)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == 1:
            os.kill(os.getpid(), signal.SIGKILL)


def killed_run(workdir: Path) -> None:
    """Train the context (saved), then a TargetVI that checkpoints every epoch and is killed mid-training."""
    context, target = prepare()
    context_model = train_context(context)
    context_model.save(workdir / "context", overwrite=True)
    callbacks = [ResumableCheckpoint(str(workdir / "checkpoints")), KillAt(KILL_EPOCH)]
    train_target(target, context_model, callbacks=callbacks)
    raise SystemExit("the training was not killed")


def workflow(out: Path) -> None:
    """A seeded workflow: both models (2 epochs each), latents, label transfer, similarity and homolog LFC."""
    scvi.settings.seed = 0
    context, target = prepare()
    context_model = train_context(context)
    model = train_target(target, context_model, epochs=2)
    labels = model.transfer_labels(n_candidates=40, top_k=10)
    types = model.cell_type_similarity(target_labels_key="labels", n_target=20, n_context=10)
    lfc = model.homolog_lfc(labels_key="labels", n_samples=500, progress_bar=False)
    np.savez(
        out,
        context_latent=context_model.get_latent_representation(),
        target_latent=model.get_latent_representation(),
        labels=np.asarray(labels.iloc[:, 0].astype(str), dtype=str),
        confidence=labels.select_dtypes("number").to_numpy(dtype=float),
        cell_type_similarity=types.to_numpy(dtype=float),
        lfc=lfc.select_dtypes("number").to_numpy(dtype=float),
        history=np.concatenate([model.history[k][k].to_numpy(dtype=float) for k in sorted(model.history)]),
    )


if __name__ == "__main__":
    torch.set_num_threads(1)
    command, path = sys.argv[1], Path(sys.argv[2])
    {"kill": killed_run, "workflow": workflow}[command](path)
