"""Lower bounds on the training time of a model on this machine, from its unavoidable kernels alone.

A training step of a ContextVI or TargetVI has to multiply every layer's weights forward and backward,
evaluate the count likelihood's transcendental functions for every (cell, gene) and update the weights
with Adam; a TargetVI step also decodes the candidates of its aligned cells and evaluates the
count likelihood's transcendental functions over every (candidate, gene) pair. Timing only these kernels at
the model's shapes, with torch on this CPU, and multiplying by the number of steps of a training run gives
a time below which no implementation of the same model, batch size and epochs can train here: everything
else a step does (activations, layer norm, dropout, the likelihood's backward pass and arithmetic, the data
loading) only adds to it. ``benchmarks/bench_context.py`` and ``benchmarks/bench_target.py`` report it beside the training times.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

#: Layers whose input is the count data: they need no gradient with respect to their input.
DATA_LAYERS = ("outer_encoder.blocks.0.", "library_encoder.blocks.0.")


def _best_ms(function, repeats: int = 30) -> float:
    """Best of a few means over ``repeats`` calls, in milliseconds (the least disturbed by other jobs)."""
    function()
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            function()
        best = min(best, (time.perf_counter() - start) / repeats * 1e3)
    return best


def steps_per_run(n_cells: int, epochs: int, batch_size: int = 128, train_size: float = 0.9) -> int:
    """Optimizer steps of a scvi-tools training run (its default 90 % training split, last batch kept)."""
    return epochs * math.ceil(math.ceil(train_size * n_cells) / batch_size)


def matmul_ms(module: nn.Module, rows: int, dtype: torch.dtype = torch.float32) -> float:
    """Time of the matrix products of one training step over ``rows`` cells: forward, weight and input gradients.

    Every ``nn.Linear`` of ``module`` counts once. Frozen layers (no weight gradient) still pass gradients
    to their input; the first layers of the encoders, which read the data, need none.
    """
    total = 0.0
    for name, layer in module.named_modules():
        if isinstance(layer, nn.Linear):
            backward = ("weight",) * layer.weight.requires_grad + ("input",) * (not name.startswith(DATA_LAYERS))
            total += _linear_ms(layer, rows, dtype, backward)
    return total


def _linear_ms(
    layer: nn.Linear, rows: int, dtype: torch.dtype, backward: tuple[str, ...] = (), repeats: int = 30
) -> float:
    """Time of one linear layer's forward product over ``rows`` rows, plus its ``"weight"``/``"input"`` gradient products."""
    x = torch.randn(rows, layer.in_features, dtype=dtype)
    weight = layer.weight.detach().to(dtype)
    grad = torch.randn(rows, layer.out_features, dtype=dtype)
    products = [lambda: x @ weight.T]
    if "weight" in backward:
        products.append(lambda: grad.T @ x)
    if "input" in backward:
        products.append(lambda: grad @ weight)
    return sum(_best_ms(product, repeats=repeats) for product in products)


def adam_ms(module: nn.Module) -> float:
    """Time of one fused Adam update of the trainable parameters (on copies, the module is left alone)."""
    params = [p.detach().clone().requires_grad_() for p in module.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p)
    optimizer = torch.optim.Adam(params, lr=1e-3, fused=True)
    return _best_ms(optimizer.step)


def likelihood_ms(n_rows: int, n_genes: int, zero_inflated: bool) -> float:
    """Time of the count likelihood's transcendental functions over ``(n_rows, n_genes)``, forward only.

    One pass of each function it cannot do without per (row, gene): the softmax's exponential and
    ``softplus(log(mu / theta))``, and for the ZINB also ``logaddexp`` with the zero-inflation logits and
    their ``softplus``.
    """
    values = torch.randn(n_rows, n_genes)
    other = torch.randn(n_rows, n_genes)
    passes = [lambda: values.exp(), lambda: F.softplus(values)]
    if zero_inflated:
        passes += [lambda: torch.logaddexp(values, other), lambda: F.softplus(other)]
    return sum(_best_ms(p, repeats=5) for p in passes)


def candidate_ms(decoder: nn.Module, n_pairs: int, n_genes: int, zero_inflated: bool) -> float:
    """Time of scoring ``n_pairs`` (cell, candidate) pairs: decoding (bfloat16 matrix products) and :func:`likelihood_ms`."""
    decode = sum(
        _linear_ms(layer, n_pairs, torch.bfloat16, repeats=5)
        for layer in decoder.modules()
        if isinstance(layer, nn.Linear)
    )
    return decode + likelihood_ms(n_pairs, n_genes, zero_inflated)


def training_floor(
    module: nn.Module,
    n_cells: int,
    epochs: int,
    batch_size: int = 128,
    candidate_pairs_per_step: float = 0.0,
) -> dict:
    """Lower bounds (seconds) on a training run of ``module``: its matrix products in float32 or in bfloat16,
    plus Adam and the likelihood's transcendental functions (:func:`likelihood_ms`) per step.

    ``candidate_pairs_per_step`` (a TargetVI: aligned cells per step times candidates) adds the candidate
    scoring of :func:`candidate_ms`.
    """
    steps = steps_per_run(n_cells, epochs, batch_size)
    zero_inflated = getattr(module.decoder, "zi_logits", None) is not None
    adam = adam_ms(module)
    likelihood = likelihood_ms(batch_size, module.n_input, zero_inflated)
    result = {"steps": steps, "adam_ms": round(adam, 2), "likelihood_ms": round(likelihood, 2)}
    extra = adam + likelihood
    if candidate_pairs_per_step > 0:
        candidates = candidate_ms(module.decoder, round(candidate_pairs_per_step), module.n_input, zero_inflated)
        result["candidate_ms"] = round(candidates, 2)
        extra += candidates
    for label, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        matmuls = matmul_ms(module, batch_size, dtype)
        result[f"matmul_{label}_ms"] = round(matmuls, 2)
        result[f"floor_{label}_s"] = round(steps * (matmuls + extra) / 1e3, 2)
    return result
