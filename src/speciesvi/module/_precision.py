"""Where reduced-precision matrix products are fast on the hardware at hand."""

from __future__ import annotations

import functools

import torch


@functools.cache
def fast_matmul_dtype(device: torch.device | str) -> torch.dtype:
    """``torch.bfloat16`` where bf16 matrix products are fast (CUDA with bf16, CPUs with AMX or AVX512-BF16).

    Cached per device: it is asked on every training step of a TargetVI.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu":
        cpu = torch.cpu
        checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
        if any(getattr(cpu, check, lambda: False)() for check in checks):
            return torch.bfloat16
    return torch.float32
