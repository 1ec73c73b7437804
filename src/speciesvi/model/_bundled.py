"""Pretrained models shipped inside the package, loaded offline by :meth:`speciesvi.ContextVI.load_pretrained`.

Each lives in ``speciesvi/datasets/pretrained/<name>/`` as an scvi-hub model folder (``model.pt``, the scvi-hub
metadata and a model card, see :func:`speciesvi.model.to_hub_model`) without an AnnData: the AnnData it was
trained on ships with the package too (:func:`speciesvi.datasets.baron_pancreas`), and is restricted to the
model's genes when the model loads. ``scripts/make_pretrained_context.py`` trains and writes them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..datasets import baron_pancreas
from ._save import saved_var_names

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

#: Folder of the bundled models inside the ``speciesvi.datasets`` package.
PRETRAINED_DIR = "pretrained"


def _baron_mouse() -> AnnData:
    return baron_pancreas()[0]


@dataclass(frozen=True)
class BundledModel:
    """A pretrained model shipped with speciesvi.

    Parameters
    ----------
    name
        Name passed to ``load_pretrained``; also the folder under ``speciesvi/datasets/pretrained``.
    description
        One line: what the model is.
    dataset
        Returns the AnnData the model was trained on (all genes); it is restricted to the model's genes on load.
    """

    name: str
    description: str
    dataset: Callable[[], AnnData]


#: The pretrained models shipped with speciesvi, by name.
BUNDLED: dict[str, BundledModel] = {
    model.name: model
    for model in (
        BundledModel(
            "baron_mouse_pancreas",
            "ContextVI of the Baron et al. (2016) mouse pancreas (1,886 cells, 2 donors, 12 cell types; the mouse "
            "genes of speciesvi.pp.select_genes against the human demo data), trained 40 epochs.",
            _baron_mouse,
        ),
    )
}


def _entry(name: str) -> BundledModel:
    if name not in BUNDLED:
        known = ", ".join(repr(known) for known in sorted(BUNDLED))
        raise ValueError(
            f"No pretrained model named {name!r}; the pretrained models shipped with speciesvi are: {known}."
        )
    return BUNDLED[name]


@contextmanager
def bundled_model_dir(name: str) -> Iterator[Path]:
    """The folder of the bundled model ``name`` (a ``ValueError`` listing the known names if there is none).

    Parameters
    ----------
    name
        A key of :data:`BUNDLED`.

    Yields
    ------
    pathlib.Path
        The scvi-hub model folder, valid inside the ``with`` block (the package may be zipped).
    """
    _entry(name)
    root = resources.files("speciesvi.datasets") / PRETRAINED_DIR / name
    with resources.as_file(root) as folder:
        if not (Path(folder) / "model.pt").is_file():
            raise ValueError(
                f"The pretrained model {name!r} is missing from this installation ({folder} has no model.pt); "
                "reinstall speciesvi, or rebuild it with scripts/make_pretrained_context.py."
            )
        yield Path(folder)


def _model_adata(adata: AnnData, genes: np.ndarray, name: str) -> AnnData:
    """``adata`` itself if it holds exactly the model's genes in order, else a copy restricted to them."""
    if adata.n_vars == len(genes) and np.array_equal(adata.var_names.to_numpy(), genes):
        return adata
    missing = np.setdiff1d(genes, adata.var_names.to_numpy())
    if len(missing):
        raise ValueError(
            f"The AnnData lacks {len(missing)} of the {len(genes)} genes of the pretrained model {name!r} "
            f"(e.g. {', '.join(map(str, missing[:5]))}). Pass the context AnnData the model was trained on, with "
            "all its genes, or adata=None for the bundled one."
        )
    logger.info("Restricting the AnnData (%d genes) to the %d genes of %r.", adata.n_vars, len(genes), name)
    return adata[:, genes].copy()


def load_bundled(cls: type, name: str, adata: AnnData | None = None, **kwargs):
    """Load the bundled model ``name`` as ``cls`` (see :meth:`speciesvi.ContextVI.load_pretrained`)."""
    entry = _entry(name)
    with bundled_model_dir(name) as folder:
        genes = np.asarray(saved_var_names(folder)).astype(str)
        adata = _model_adata(entry.dataset() if adata is None else adata, genes, name)
        model = cls.load(folder, adata=adata, **kwargs)
    logger.info("Loaded the pretrained %s %r (%d cells, %d genes).", cls.__name__, name, adata.n_obs, adata.n_vars)
    return model
