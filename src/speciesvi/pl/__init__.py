"""Plots of speciesvi results (drawn from AnnData and DataFrames, not from networks)."""

from ._embedding import joint_embedding, label_palette

__all__ = ["joint_embedding", "label_palette"]
