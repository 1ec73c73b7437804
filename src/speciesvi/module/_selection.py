"""Scoring the data-level candidates of the aligned target cells (the alignment term's choice).

For each aligned target cell, the alignment term decodes ``k`` candidate latent codes with the target decoder,
under the cell's batch and library size, and keeps the candidate under which the cell's counts are most likely.
That is ``k`` decodings of every aligned cell over all genes, the largest single cost of a TargetVI training step
on a CPU, so it is written here with as few passes over the ``(cells, k, genes)`` arrays as the arithmetic allows:
one matrix product for the logits and one for the zero-inflation logits of every candidate (bfloat16 where
that is fast), then, a few cells at a time so that the arrays stay in the CPU cache, about ten elementwise passes over the
terms of :mod:`speciesvi.module._likelihood`; the terms at the non-zero counts are dot products with the counts instead of
gathers where they are linear in the counts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._components import ExpressionDecoder
from ._likelihood import dispersion_terms, zinb_zero_direct

#: Elements of a ``(cells, k, genes)`` block scored at once (4 MiB of float32): small enough for the CPU cache.
SELECTION_BLOCK = 2**20
#: Largest shifted logit passed to ``exp`` (float32 overflows at about 88).
EXP_SAFE = 80.0


def _dot(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``(values * weights[:, None, :]).sum(-1)`` for ``values (cells, k, genes)``, ``weights (cells, genes)``.

    As ``(1, genes) @ (genes, k)`` products: about three times faster on a CPU than ``(k, genes) @ (genes, 1)``.
    """
    return torch.bmm(weights.unsqueeze(1), values.transpose(1, 2)).squeeze(1)


def candidate_log_likelihoods(
    v: torch.Tensor,
    log_library: torch.Tensor,
    theta: torch.Tensor,
    x: torch.Tensor,
    zi_logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """Log-likelihood of each cell's counts under each of its candidates' NB or ZINB, up to terms shared by all of them.

    With ``mu = softmax(logits) * exp(log_library)``, it equals the log-likelihood
    (:func:`~speciesvi.module._likelihood.count_log_prob_sum`) less ``sum(lgamma(x + 1))`` and, when ``theta``
    is the same for all candidates of a cell, less ``sum(lgamma(x + theta) - lgamma(theta))``: terms that do not
    change which candidate is the most likely. The terms are those of :mod:`speciesvi.module._likelihood`:
    with ``r = mu / theta``, ``s = log(1 + r)`` (from ``r``, which the softmax normaliser yields anyway) and
    ``a = -theta s``, the dense part is the zero-count log-probability of every gene, and the sparse part
    ``x (log r - s)`` is summed as dot products with the counts, its zero-inflation term at the non-zero
    counts only.

    Parameters
    ----------
    v
        Decoder logits minus log inverse dispersions, ``(cells, k, genes)``, float32. Overwritten.
    log_library
        Log library size of each cell, ``(cells, 1)``.
    theta
        Inverse dispersions, ``(cells, genes)`` (the same for all candidates of a cell) or ``(cells, k, genes)``.
    x
        Counts, ``(cells, genes)``.
    zi_logits
        Zero-inflation logits ``(cells, k, genes)`` (float32, overwritten) for the ZINB; ``None`` for the NB.

    Returns
    -------
    torch.Tensor
        ``(cells, k)``.
    """
    if v.amax() > EXP_SAFE:  # softmax is shift invariant; keep exp finite
        v.sub_(v.amax(-1, keepdim=True))
    sum_x_v = _dot(v, x)
    e = v.exp_()  # e * theta is proportional to the softmax numerator
    total = _dot(e, theta) if theta.dim() == 2 else (e * theta).sum(-1)
    log_scale = log_library - total.log()  # log r = v + log_scale
    s = e.mul_(log_scale.exp().unsqueeze(-1)).add_(1.0).log_()  # log(1 + r)
    positive = sum_x_v + x.sum(-1, keepdim=True) * log_scale - _dot(s, x)  # sum of x (log r - s)
    a = s.mul_(-(theta.unsqueeze(1) if theta.dim() == 2 else theta))  # nb_zero, in place
    if theta.dim() == 3 or zi_logits is not None:
        rows, cols = x.nonzero(as_tuple=True)
    if theta.dim() == 3:  # per-candidate dispersions: their lgamma terms differ between candidates
        theta_at, counts = theta[rows, :, cols], x[rows, cols].unsqueeze(1)
        positive = positive.index_add_(0, rows, dispersion_terms(counts, theta_at))
    if zi_logits is None:
        return a.sum(-1) + positive
    # a zero count has log p(0) (zinb_zero); a positive one zinb_zero + zinb_gain = a - softplus(pi) (+ the x terms)
    nonzero = (x > 0).to(a.dtype)
    log_keep = torch.zeros_like(positive).index_add_(0, rows, F.softplus(zi_logits[rows, :, cols]))  # -log(1 - pi)
    sum_a_nonzero = _dot(a, nonzero)
    log_zero = zinb_zero_direct(a, zi_logits, overwrite=True)
    return _dot(log_zero, 1.0 - nonzero) + sum_a_nonzero - log_keep + positive


def score_candidates(
    decoder: ExpressionDecoder,
    hidden: torch.Tensor,
    batch_index: torch.Tensor,
    log_library: torch.Tensor,
    x: torch.Tensor,
    matmul_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Log-likelihood of each cell's counts under the decoding of each of its candidates, up to shared terms.

    Parameters
    ----------
    decoder
        The target decoder.
    hidden
        Its last hidden layer for the candidates, ``(cells, k, hidden)``.
    batch_index
        Batch of each cell, ``(cells, 1)``.
    log_library
        Log library size of each cell, ``(cells, 1)``.
    x
        Counts, ``(cells, genes)``.
    matmul_dtype
        dtype of the product of ``hidden`` with the output layers (``torch.bfloat16`` where that is fast; the
        likelihood itself is computed in float32).

    Returns
    -------
    torch.Tensor
        ``(cells, k)``.
    """
    n_cells, k, _ = hidden.shape
    n_genes = decoder.logits.out_features
    flat_hidden = hidden.reshape(n_cells * k, -1).to(matmul_dtype)
    layers = [decoder.logits] if decoder.zi_logits is None else [decoder.logits, decoder.zi_logits]
    outputs = [torch.mm(flat_hidden, layer.weight.to(matmul_dtype).T) for layer in layers]  # (cells * k, genes)
    if decoder.dispersion == "gene-cell":
        log_theta = decoder.log_theta_for(hidden, batch_index)  # (cells, k, genes)
        shift = decoder.logits.bias - log_theta
    else:
        log_theta = decoder.log_theta_for(hidden[:, 0], batch_index).expand(n_cells, n_genes)
        shift = (decoder.logits.bias - log_theta).unsqueeze(1)
    theta = log_theta.exp()  # v = logits + shift = logits - log theta
    step = max(1, SELECTION_BLOCK // (k * n_genes))
    scores = []
    for start in range(0, n_cells, step):
        rows = slice(start, start + step)
        # float32 blocks (the products' own memory when they are float32 already: they are scratch)
        logits, *zi = (output[rows.start * k : rows.stop * k].float().view(-1, k, n_genes) for output in outputs)
        zi_logits = zi[0].add_(decoder.zi_logits.bias) if zi else None
        scores.append(
            candidate_log_likelihoods(logits.add_(shift[rows]), log_library[rows], theta[rows], x[rows], zi_logits)
        )
    return torch.cat(scores)
