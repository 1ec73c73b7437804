import numpy as np


def shared_types(target_labels: np.ndarray, context_labels: np.ndarray, min_cells: int = 20) -> list[str]:
    """Labels with at least ``min_cells`` cells in both species."""
    target_types, target_counts = np.unique(target_labels, return_counts=True)
    context_types, context_counts = np.unique(context_labels, return_counts=True)
    big_context = set(context_types[context_counts >= min_cells])
    return [t for t, n in zip(target_types, target_counts, strict=True) if n >= min_cells and t in big_context]
