"""Datasets: the embedded Baron et al. (2016) pancreas demo pair."""

from ._baron import baron_pancreas

__all__ = ["baron_pancreas"]
