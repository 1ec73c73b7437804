"""Resumable training: a Lightning checkpoint every epoch, and the state a resumed run needs beyond Lightning's own.

Lightning's checkpoint (written by :class:`ResumableCheckpoint`, scvi-tools' :class:`~scvi.train.SaveCheckpoint`
kept to one ``last.ckpt``) holds the weights, the optimizer state and the epoch and step counters; the KL and η
warm-ups are functions of those counters, so they resume where they stopped. The training plan adds the random
number generators' states and the training history so far (:func:`resume_state`, :func:`restore_resume_state`),
so that a resumed run draws the same minibatches as an uninterrupted one and ``model.history`` covers every epoch.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from scvi.train import SaveCheckpoint

if TYPE_CHECKING:
    import lightning.pytorch as pl

logger = logging.getLogger(__name__)

#: Key of speciesvi's part of a Lightning checkpoint.
RESUME_KEY = "speciesvi_resume"


class ResumableCheckpoint(SaveCheckpoint):
    """Write a Lightning checkpoint to ``dirpath/last.ckpt`` every ``every_n_epochs`` epochs, to resume training.

    A subclass of scvi-tools' :class:`~scvi.train.SaveCheckpoint` that keeps one checkpoint, the latest, with
    everything Lightning needs to continue (weights, optimizer state, epoch and step, so the KL and η
    warm-ups) and what speciesvi's training plan adds (random states, the history so far). Each checkpoint
    replaces the previous one atomically: a crash while writing leaves the previous one intact. Pass it in
    ``callbacks``; after an interruption build the model again with the same arguments and call ``train`` with
    the same arguments plus ``ckpt_path="last"`` (or the path of ``last.ckpt``): training continues at the
    epoch after the checkpoint and ends at ``max_epochs``, as it would have without the interruption.

    scvi-tools checks the validation set every epoch while checkpointing; with ``train_size=1.0`` (no validation
    set) this callback switches the validation loop off instead of failing.

    Parameters
    ----------
    dirpath
        Folder of the checkpoint; created if missing. Use one folder per training run.
    every_n_epochs
        Write a checkpoint every this many epochs.
    **kwargs
        Passed to :class:`lightning.pytorch.callbacks.ModelCheckpoint` (e.g. ``train_time_interval`` to write
        one every so many minutes instead).

    Examples
    --------
    >>> from speciesvi.train import ResumableCheckpoint
    >>> model = speciesvi.ContextVI(mouse)
    >>> model.train(max_epochs=100, callbacks=[ResumableCheckpoint("checkpoints/mouse")], ckpt_path="last")

    After a crash, the same lines continue from the last checkpoint (``ckpt_path="last"`` starts afresh when
    the folder holds none).
    """

    def __init__(self, dirpath: str, every_n_epochs: int = 1, **kwargs):
        for unsupported in ("monitor", "save_top_k", "filename", "load_best_on_end", "check_nan_gradients"):
            if unsupported in kwargs:
                raise ValueError(
                    f"ResumableCheckpoint keeps the latest checkpoint only; {unsupported}= is not supported. Use "
                    "scvi.train.SaveCheckpoint to keep the best model by a metric."
                )
        if every_n_epochs < 1 and "train_time_interval" not in kwargs:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}.")
        if "train_time_interval" in kwargs:
            every_n_epochs = None
        super().__init__(
            dirpath=str(dirpath),
            filename=self.CHECKPOINT_NAME_LAST,
            monitor=None,
            save_top_k=1,
            every_n_epochs=every_n_epochs,
            enable_version_counter=False,
            **kwargs,
        )

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Switch the validation loop off when there is no validation set (``train_size=1.0``)."""
        super().setup(trainer, pl_module, stage)
        if getattr(trainer.datamodule, "n_val", None) == 0:
            trainer.limit_val_batches = 0

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        """Keep Lightning's checkpoint only (scvi-tools' SaveCheckpoint would also save a model folder)."""


def _rng_states() -> dict[str, Any]:
    """The states of torch's (CPU and, if in use, CUDA), numpy's and Python's global generators."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    numpy_state = states["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _logger_history(trainer: pl.Trainer) -> dict[str, pd.DataFrame] | None:
    """The in-memory history of scvi-tools' SimpleLogger, or ``None`` for another logger."""
    data = getattr(getattr(trainer.logger, "experiment", None), "data", None)
    return data if isinstance(data, dict) else None


def resume_state(trainer: pl.Trainer, current_epoch_values: dict[str, float]) -> dict[str, Any]:
    """What a resumed run needs beyond Lightning's checkpoint: random states and the history so far.

    Parameters
    ----------
    trainer
        The running trainer.
    current_epoch_values
        Values logged for the current epoch that the logger has not received yet (Lightning hands them over
        after the checkpoint is written).

    Returns
    -------
    dict
        Plain types and tensors only, so that the checkpoint loads with ``weights_only=True``.
    """
    history: dict[str, dict[str, Any]] = {}
    for name, frame in (_logger_history(trainer) or {}).items():
        values = frame[name]
        history[name] = {
            "index_name": str(frame.index.name or "epoch"),
            "index": [int(i) for i in frame.index],
            "values": [float(v) for v in values.to_numpy(dtype=float)],
        }
    epoch = int(trainer.current_epoch)
    for name, value in current_epoch_values.items():
        record = history.setdefault(name, {"index_name": "epoch", "index": [], "values": []})
        if record["index_name"] == "epoch" and epoch not in record["index"]:
            record["index"].append(epoch)
            record["values"].append(float(value))
    from scvi import settings

    return {"rng": _rng_states(), "history": history, "seed": settings.seed}


def restore_resume_state(trainer: pl.Trainer, state: dict[str, Any]) -> None:
    """Put back the random states and the history written by :func:`resume_state`."""
    from scvi import settings

    if state.get("seed") != settings.seed:
        logger.warning(
            "The checkpoint was written with scvi.settings.seed = %s, this run has %s: the train/validation split "
            "may differ from the interrupted run's. Set scvi.settings.seed = %s before resuming to continue it exactly.",
            state.get("seed"),
            settings.seed,
            state.get("seed"),
        )
    _set_rng_states(state["rng"])
    data = _logger_history(trainer)
    if data is None:
        logger.info("The logger is not scvi-tools' SimpleLogger: the history before the checkpoint is not restored.")
        return
    for name, record in state["history"].items():
        index = pd.Index(record["index"], name=record["index_name"])
        restored = pd.DataFrame({name: pd.Series(record["values"], index=index, dtype=object)})
        data[name] = restored if name not in data else pd.concat([restored, data[name]])
