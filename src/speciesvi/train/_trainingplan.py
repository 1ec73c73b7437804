"""Training plans: scvi-tools' TrainingPlan with a fused Adam and epoch-level logging, and the η warm-up of the alignment term."""

from __future__ import annotations

import torch
from scvi.module.base import LossOutput
from scvi.train import TrainingPlan

from ..module import ALIGNMENT_KEY
from ._checkpoint import RESUME_KEY, restore_resume_state, resume_state


class SpeciesTrainingPlan(TrainingPlan):
    """:class:`scvi.train.TrainingPlan` with PyTorch's fused Adam, logging its training metrics once per epoch.

    - ``optimizer="Adam"`` uses the fused kernel: the same updates as the default one, in a single pass over
      the parameters.
    - scvi-tools' plan logs six or more values on every training step, and each Lightning ``log`` call moves and
      copies its metadata: on a CPU that is several milliseconds per step, a sixth of a step of these models.
      With ``on_step=False`` (the default) this plan adds the same quantities up over the epoch and logs them
      once, in its last step (so that callbacks see them at the end of the epoch): ``train_loss``,
      ``elbo_train``, ``reconstruction_loss_train``, ``kl_local_train``, ``kl_global_train``, ``kl_weight`` and
      each scalar extra metric as ``<name>_train``, with the values scvi-tools' plan records (means over the
      epoch's cells). With ``on_step=True`` it logs as scvi-tools does.
    - Lightning checkpoints (see :class:`~speciesvi.train.ResumableCheckpoint`) also carry the random states and
      the history so far: a run resumed with ``train(..., ckpt_path=...)`` draws the minibatches the
      uninterrupted run would have, and its ``history`` covers every epoch. The KL (and η) warm-ups are
      functions of the epoch and step counters that Lightning restores.
    """

    def get_optimizer_creator(self):
        """Fused Adam for ``optimizer="Adam"``; anything else as in scvi-tools."""
        if self.optimizer_name != "Adam":
            return super().get_optimizer_creator()
        return lambda params: torch.optim.Adam(
            params, lr=self.lr, eps=self.eps, weight_decay=self.weight_decay, fused=True
        )

    def on_train_epoch_start(self) -> None:
        """Start the epoch's sums."""
        super().on_train_epoch_start()
        self._epoch_sums: torch.Tensor | None = None
        self._epoch_batches = 0
        self._epoch_logged = False
        self._epoch_values: dict[str, float] = {}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Add the random states and the history so far to Lightning's checkpoint (see :mod:`._checkpoint`)."""
        super().on_save_checkpoint(checkpoint)
        checkpoint[RESUME_KEY] = resume_state(self.trainer, getattr(self, "_epoch_values", {}))

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Restore what :meth:`on_save_checkpoint` added, when resuming training."""
        super().on_load_checkpoint(checkpoint)
        if RESUME_KEY in checkpoint:
            restore_resume_state(self.trainer, checkpoint[RESUME_KEY])

    def log_epoch_value(self, name: str, value: torch.Tensor | float, prog_bar: bool = False) -> None:
        """Log ``name`` once for the epoch, and keep it for a checkpoint written before the logger receives it."""
        self.log(name, value, on_step=False, on_epoch=True, prog_bar=prog_bar)
        self._epoch_values[name] = float(value)

    def training_step(self, batch, batch_idx):
        """Training step: the loss, its parts added to the epoch's sums (logged at the end of the epoch)."""
        if self.on_step:
            return super().training_step(batch, batch_idx)
        if "kl_weight" in self.loss_kwargs:
            self._last_kl_weight = self.kl_weight
            self.loss_kwargs.update({"kl_weight": self._last_kl_weight})
        _, _, loss_output = self.forward(batch, loss_kwargs=self.loss_kwargs)
        self._add_to_epoch(loss_output)
        if batch_idx + 1 >= self.trainer.num_training_batches:
            self.log_epoch_metrics()
        return loss_output.loss

    def _add_to_epoch(self, loss_output: LossOutput) -> None:
        n_obs = loss_output.n_obs_minibatch
        if self._epoch_sums is None:  # the scalar extra metrics, named once per epoch
            self._extra_keys = [
                key
                for key, value in (loss_output.extra_metrics or {}).items()
                if isinstance(value, torch.Tensor) and value.dim() == 0
            ]
        parts = [
            torch.as_tensor(n_obs, dtype=torch.float64),
            loss_output.loss.detach() * n_obs,
            loss_output.reconstruction_loss_sum.detach(),
            loss_output.kl_local_sum.detach(),
            loss_output.kl_global_sum.detach(),
            *(loss_output.extra_metrics[key].detach() * n_obs for key in self._extra_keys),
        ]
        sums = torch.stack([part.to(device=parts[1].device, dtype=torch.float64) for part in parts])
        self._epoch_sums = sums if self._epoch_sums is None else self._epoch_sums + sums
        self._epoch_batches += 1

    def epoch_metrics(self) -> dict[str, torch.Tensor]:
        """Training metrics of the current epoch so far, as scvi-tools' plan records them (empty before its first step)."""
        if getattr(self, "_epoch_sums", None) is None:
            return {}
        n_obs, loss, reconstruction, kl_local, kl_global, *extras = self._epoch_sums.float()
        kl_global_mean = kl_global / self._epoch_batches
        n_total = self.n_obs_training if self.n_obs_training else 1
        metrics = {
            "train_loss": loss / n_obs,
            "elbo_train": (reconstruction + kl_local) / n_obs + kl_global_mean / n_total,
            "reconstruction_loss_train": reconstruction / n_obs,
            "kl_local_train": kl_local / n_obs,
            "kl_global_train": kl_global_mean,
        }
        metrics.update({f"{key}_train": value / n_obs for key, value in zip(self._extra_keys, extras, strict=True)})
        return metrics

    def log_epoch_metrics(self) -> None:
        """Log the epoch's training metrics (:meth:`epoch_metrics`) and the KL weight, once per epoch."""
        if self._epoch_logged:
            return
        self._epoch_logged = True
        metrics = self.epoch_metrics()
        for name, value in metrics.items():
            self.log_epoch_value(name, value, prog_bar=name == "train_loss")
        if hasattr(self, "_last_kl_weight"):
            self.log_epoch_value("kl_weight", float(self._last_kl_weight))
        self._log_epoch_extras(metrics)

    def _log_epoch_extras(self, metrics: dict[str, torch.Tensor]) -> None:
        """Subclasses log values derived from the epoch's ``metrics`` here (nothing by default)."""

    def on_train_epoch_end(self) -> None:
        """Log the epoch's training metrics if the last step did not (a loader of unknown length)."""
        super().on_train_epoch_end()
        if not self.on_step and self._epoch_sums is not None:
            self.log_epoch_metrics()


def linear_warmup(epoch: int, n_epochs: int, start: float, end: float) -> float:
    """Weight rising linearly from ``start`` at epoch 0 to ``end`` at epoch ``n_epochs``, constant after."""
    if n_epochs <= 0:
        return end
    return start + (end - start) * min(epoch / n_epochs, 1.0)


class AlignmentTrainingPlan(SpeciesTrainingPlan):
    """Training plan of :class:`~speciesvi.TargetVI`: the KL warm-up of scvi-tools plus an η warm-up.

    The module's ``loss`` takes ``eta``, the weight of the alignment term; it rises linearly from
    ``eta_start`` to ``eta_max`` over ``n_epochs_eta_warmup`` epochs (10 → 25 over 10 epochs, as the
    original). The weight and the alignment term are logged every epoch (``eta``, ``alignment_train``)
    and shown in the progress bar.

    Parameters
    ----------
    module
        A module whose ``loss`` accepts ``eta``.
    eta_start, eta_max
        Alignment weight at the first epoch and after the warm-up.
    n_epochs_eta_warmup
        Epochs of the warm-up.
    **kwargs
        Passed to :class:`scvi.train.TrainingPlan` (``lr``, ``n_epochs_kl_warmup``, ``min_kl_weight`` ...).
    """

    def __init__(
        self,
        module,
        *,
        eta_start: float = 10.0,
        eta_max: float = 25.0,
        n_epochs_eta_warmup: int = 10,
        **kwargs,
    ):
        if eta_start < 0 or eta_max < 0:
            raise ValueError(f"eta_start and eta_max must be >= 0, got {eta_start} and {eta_max}.")
        super().__init__(module, **kwargs)
        self.eta_start = eta_start
        self.eta_max = eta_max
        self.n_epochs_eta_warmup = n_epochs_eta_warmup
        self.loss_kwargs.update({"eta": self.eta})

    @property
    def eta(self) -> float:
        """Alignment weight at the current epoch."""
        return linear_warmup(self.current_epoch, self.n_epochs_eta_warmup, self.eta_start, self.eta_max)

    def training_step(self, batch, batch_idx):
        """Training step with the current η."""
        self.loss_kwargs.update({"eta": self.eta})
        if self.on_step:
            self.log("eta", self.eta, on_step=False, on_epoch=True)
        return super().training_step(batch, batch_idx)

    def _log_epoch_extras(self, metrics: dict[str, torch.Tensor]) -> None:
        """Log η and the alignment term (also shown in the progress bar as ``align``)."""
        self.log_epoch_value("eta", float(self.eta))
        alignment = metrics.get(f"{ALIGNMENT_KEY}_train")
        if alignment is not None:
            self.log_epoch_value("align", alignment, prog_bar=True)

    def compute_and_log_metrics(self, loss_output, metrics, mode):
        """Log as scvi-tools does (``alignment_train`` in the history), and show the alignment term in the progress bar."""
        super().compute_and_log_metrics(loss_output, metrics, mode)
        alignment = (loss_output.extra_metrics or {}).get(ALIGNMENT_KEY)
        if mode == "train" and alignment is not None:
            self.log("align", alignment.detach(), on_step=False, on_epoch=True, prog_bar=True)
