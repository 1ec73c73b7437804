"""Novelty of target cells against the context, and the robust rule that turns it into ``p_known``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy import sparse
from scipy.special import ndtr

from ..module._modes import predicting
from ..module._similarity import CountsCSR, profile_log_likelihood

#: Robust standard deviations above the typical novelty where ``p_known`` is 1/2: the smallest value (on a
#: half-SD grid) that leaves at most 2 % of a held-out context donor's cells Unassigned in the context
#: self-projections of both Baron species (docs/method.md).
NOVELTY_SDS = 4.0
#: A normal distribution's median lies this many standard deviations above its 25th percentile.
LOWER_QUARTILE_Z = 0.6745
#: Distance between a normal distribution's 25th and 5th percentiles, in standard deviations.
LOWER_TAIL_WIDTH = 0.9704
#: Labels with fewer target cells share the novelty location of all cells and do not inform the scale.
MIN_GROUP_SIZE = 20


def novelty_to_p_known(
    novelty: np.ndarray,
    groups: np.ndarray | None = None,
    min_group_size: int = MIN_GROUP_SIZE,
    calibration: dict | None = None,
) -> tuple[np.ndarray, dict]:
    """Probability that a cell belongs to a context type, from its novelty score (no labels needed).

    Cells are compared with the cells given the same label (``groups``), since how much two species
    diverge, and how much that varies from cell to cell, depends on the cell type:
    ``u = (novelty - location of the group) / scale of the group`` and ``p_known = Phi(4 - u)``, a smoothed
    Hampel outlier rule: 1/2 four robust standard deviations above the typical cell of the group, about 1
    for typical cells, about 0 for strong outliers.

    Cells of a type the context lacks join the label of their most similar context type and sit in the
    upper tail of its novelty, so both estimates come from the lower tail, which they do not reach while
    they are fewer than the known cells of the label. For normal novelty without such cells, they are
    unbiased:

    * ``scale`` of a group: its ``(25th - 5th percentile) / 0.970``, but never below the pooled scale (those
      of the groups with at least ``min_group_size`` cells, averaged weighted by their size; all cells as
      one group if there is none): a label whose cells vary more than the typical one gets its own, wider
      yardstick, and none is judged on a narrower one than the typical label, which a few cells' lower
      tail can fake. Groups with fewer than ``min_group_size`` cells use the pooled scale;
    * ``location`` of a group: its 25th percentile + 0.674 times its scale; groups with fewer than
      ``min_group_size`` cells use the 25th percentile of all cells + 0.674 pooled scales.

    Cells without a score (NaN) get ``u = 0``. With ``calibration`` (the ``stats`` of an earlier call, for
    instance on the reference cells of a query model), its locations and scales are used instead of
    estimates from ``novelty``; groups it does not know use its overall location and pooled scale.

    Parameters
    ----------
    novelty
        Per-cell novelty scores (higher = less like any context cell).
    groups
        Per-cell labels (the transferred ones); ``None`` treats all cells as one group.
    min_group_size
        Smallest group with its own location and a say in the scale.
    calibration
        ``stats`` returned by an earlier call: the ``scale``, the ``location`` of every group and the
        ``overall`` location.

    Returns
    -------
    p_known
        ``(n_cells,)`` in ``[0, 1]``.
    stats
        ``scale`` (pooled), ``sds`` (4), the ``location`` and ``group_scale`` of every group and the
        ``overall`` location (of groups with fewer than ``min_group_size`` cells), to store with the results.

    Examples
    --------
    >>> from scipy.stats import norm
    >>> typical = 1.0 + 0.1 * norm.ppf(np.linspace(0.005, 0.995, 100))  # normal around 1 with sd 0.1
    >>> p, stats = novelty_to_p_known(np.concatenate([typical, [3.0, 4.0]]))
    >>> np.flatnonzero(p < 0.5).tolist(), round(stats["scale"], 2)
    ([100, 101], 0.1)
    """
    novelty = np.asarray(novelty, dtype=np.float64)
    groups = np.zeros(novelty.shape[0], dtype=np.int64) if groups is None else np.asarray(groups)
    finite = np.isfinite(novelty)
    if calibration is not None:
        scale, overall, location = calibration["scale"], calibration["overall"], calibration["location"]
        group_scale = calibration.get("group_scale", {})  # absent from calibrations saved before 0.3
        lookup = groups.astype(str)  # a stored calibration keys its groups by name
    elif not finite.any():
        stats = {"scale": float("nan"), "sds": NOVELTY_SDS, "location": {}, "group_scale": {}, "overall": 0.0}
        return np.ones_like(novelty), stats
    else:
        scale, overall, location, group_scale = _novelty_location_scale(novelty[finite], groups[finite], min_group_size)
        lookup = groups
    cell_location = np.array([location.get(group, overall) for group in lookup], dtype=np.float64)
    cell_scale = np.array([group_scale.get(group, scale) for group in lookup], dtype=np.float64)
    u = np.where(finite, (novelty - cell_location) / cell_scale, 0.0)
    stats = {"scale": scale, "sds": NOVELTY_SDS, "location": location, "group_scale": group_scale, "overall": overall}
    return ndtr(NOVELTY_SDS - u), {**(calibration or {}), **stats}


def _novelty_location_scale(
    novelty: np.ndarray, groups: np.ndarray, min_group_size: int
) -> tuple[float, float, dict, dict]:
    """Pooled scale, overall location, per-group location and scale of finite novelty (see novelty_to_p_known)."""
    frame = pd.DataFrame({"novelty": novelty, "group": groups})
    by_group = frame.groupby("group", sort=True, observed=True)["novelty"]
    sizes, lower, lowest = by_group.size(), by_group.quantile(0.25), by_group.quantile(0.05)
    big = sizes.index[sizes >= min_group_size]
    own = (lower - lowest) / LOWER_TAIL_WIDTH
    if len(big):
        scale = float(np.average(own[big], weights=sizes[big]))
    else:
        scale = float((frame["novelty"].quantile(0.25) - frame["novelty"].quantile(0.05)) / LOWER_TAIL_WIDTH)
    if not scale > 0:
        scale = float(frame["novelty"].std()) or 1.0
    overall = float(frame["novelty"].quantile(0.25)) + LOWER_QUARTILE_Z * scale
    group_scale = {group: max(float(own[group]), scale) if group in big else scale for group in sizes.index}
    location = {
        group: float(lower[group]) + LOWER_QUARTILE_Z * group_scale[group] if group in big else overall
        for group in sizes.index
    }
    return scale, overall, location, group_scale


def calibration_record(labels_key: str, stats: dict, source: str = "own") -> dict:
    """The location and scale of the novelty rule as stored with results (``novelty_calibration``), JSON-ready."""
    return {
        "labels_key": labels_key,
        "source": source,
        "scale": stats["scale"],
        "overall": stats["overall"],
        "location": {str(k): v for k, v in stats["location"].items()},
        "group_scale": {str(k): v for k, v in stats["group_scale"].items()},
    }


@torch.inference_mode()
def novelty_scores(
    target_decoder: torch.nn.Module,
    context_decoder: torch.nn.Module,
    z: np.ndarray,
    batches: np.ndarray,
    counts: CountsCSR,
    context_z: torch.Tensor,
    context_batches: np.ndarray,
    voters: np.ndarray,
    target_genes: np.ndarray,
    context_genes: np.ndarray,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Per-cell novelty: nats per homologous count by which the best voter's context profile falls short.

    ``(sum_g x_g log p^T_g - max_j sum_g x_g log p^C_jg) / sum_g x_g`` over the homologous genes, with ``p^T``
    the cell's own target-decoded expression (``target_decoder`` at its ``z`` and batch) and ``p^C_j`` voter
    ``j``'s context-decoded expression (``context_decoder`` at the context cell's ``z`` and batch), both
    renormalised over the homologous genes. Cells without homologous counts get NaN.

    Parameters
    ----------
    target_decoder, context_decoder
        The two species' decoders (:class:`~speciesvi.module.ExpressionDecoder`).
    z, batches
        Posterior means of z ``(n, d)`` and batch codes ``(n,)`` of the target cells.
    counts
        The target cells' counts over all target genes.
    context_z, context_batches
        Posterior means of z and batch codes of every context cell.
    voters
        ``(n, k)`` context cells each target cell is compared with.
    target_genes, context_genes
        Positions of the homologous gene pairs in the two decoders' outputs.
    device
        Where to decode.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` float64.
    """
    csr = sparse.csr_matrix((counts.data.numpy(), counts.indices.numpy(), counts.indptr.numpy()))
    csr.resize((counts.n_cells, counts.n_genes))
    homologous = CountsCSR.from_scipy(csr[:, target_genes])
    target_genes = torch.as_tensor(target_genes, device=device)
    context_genes = torch.as_tensor(context_genes, device=device)
    z = torch.as_tensor(z, device=device)
    batch = torch.as_tensor(batches, device=device).reshape(-1, 1)
    context_z = context_z.to(device)
    context_batch = torch.as_tensor(context_batches, device=device).reshape(-1, 1).long()

    def target_profiles(codes: torch.Tensor) -> torch.Tensor:
        codes = codes.to(device)
        logits = target_decoder.expression_logits(z[codes], batch[codes])[:, target_genes]
        return torch.log_softmax(logits, dim=-1).cpu()

    def context_profiles(codes: torch.Tensor) -> torch.Tensor:
        codes = codes.to(device)
        logits = context_decoder.expression_logits(context_z[codes], context_batch[codes])
        return torch.log_softmax(logits[:, context_genes], dim=-1).cpu()

    with predicting(target_decoder), predicting(context_decoder):
        n = z.shape[0]
        own = profile_log_likelihood(target_profiles, torch.arange(n).unsqueeze(1), homologous, n)[:, 0]
        best = profile_log_likelihood(context_profiles, torch.as_tensor(voters), homologous, context_z.shape[0]).amax(
            dim=1
        )
    total = homologous.row_sums().double()
    novelty = ((own - best) / total).numpy()
    novelty[total.numpy() == 0] = np.nan
    return novelty
