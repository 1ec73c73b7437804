"""Running a module in evaluation mode for a while."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def predicting(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` in evaluation mode (no dropout) for the duration of the block, then restore its mode.

    Examples
    --------
    >>> layer = nn.Dropout(0.5)
    >>> with predicting(layer):
    ...     layer.training
    False
    >>> layer.training
    True
    """
    training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(training)
