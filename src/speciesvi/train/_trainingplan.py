"""Training plans: scvi-tools' TrainingPlan with a fused Adam, and the η warm-up of the alignment term."""

from __future__ import annotations

import torch
from scvi.train import TrainingPlan

from ..module import ALIGNMENT_KEY


class SpeciesTrainingPlan(TrainingPlan):
    """:class:`scvi.train.TrainingPlan` whose ``"Adam"`` optimizer uses PyTorch's fused kernel.

    The fused Adam gives the same updates as the default one, in a single pass over the parameters.
    """

    def get_optimizer_creator(self):
        """Fused Adam for ``optimizer="Adam"``; anything else as in scvi-tools."""
        if self.optimizer_name != "Adam":
            return super().get_optimizer_creator()
        return lambda params: torch.optim.Adam(
            params, lr=self.lr, eps=self.eps, weight_decay=self.weight_decay, fused=True
        )


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
        self.log("eta", self.eta, on_step=False, on_epoch=True)
        return super().training_step(batch, batch_idx)

    def compute_and_log_metrics(self, loss_output, metrics, mode):
        """Log as scvi-tools does (``alignment_train`` in the history), and show the alignment term in the progress bar."""
        super().compute_and_log_metrics(loss_output, metrics, mode)
        alignment = (loss_output.extra_metrics or {}).get(ALIGNMENT_KEY)
        if mode == "train" and alignment is not None:
            self.log("align", alignment.detach(), on_step=False, on_epoch=True, prog_bar=True)
