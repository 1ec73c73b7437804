"""Fingerprints that tie a target model to the context model and data it was built against."""

from __future__ import annotations

import hashlib

import torch


def module_fingerprint(module: torch.nn.Module) -> str:
    """SHA-1 of a module's parameters and buffers (names, shapes and values)."""
    digest = hashlib.sha1()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
