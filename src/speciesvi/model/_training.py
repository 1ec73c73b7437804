"""Training-plan arguments: the user's settings first, speciesvi's defaults where the user gave none."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scvi.train._config import KwargsLike, merge_kwargs


def plan_kwargs_with_defaults(
    defaults: Mapping[str, Any], plan_config: KwargsLike | None, plan_kwargs: KwargsLike | None
) -> dict[str, Any]:
    """The training-plan arguments of a ``train`` call.

    ``plan_config`` and ``plan_kwargs`` are merged as :meth:`scvi.model.base.UnsupervisedTrainingMixin.train`
    merges them (``plan_kwargs`` win); ``defaults`` fill only the arguments that neither sets. A config object
    (:class:`scvi.train.TrainingPlanConfig`) sets every one of its fields.

    Parameters
    ----------
    defaults
        speciesvi's defaults.
    plan_config
        The user's ``plan_config``: a mapping or an object with ``to_kwargs()``.
    plan_kwargs
        The user's ``plan_kwargs``.

    Returns
    -------
    dict
        The arguments to pass as ``plan_kwargs`` (with no ``plan_config``).
    """
    return {**defaults, **merge_kwargs(plan_config, plan_kwargs, name="plan")}
