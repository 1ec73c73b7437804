"""Atomic saving and safe, checked loading for speciesvi models.

scvi-tools 1.4 reads ``model.pt`` with ``torch.load(..., weights_only=False)``: a model file from an untrusted
source can then run any code while it is read. speciesvi reads its own files with ``weights_only=True`` instead,
allowing only the plain numpy and pandas types that scvi-tools writes (:data:`SAFE_GLOBALS`, through
:class:`torch.serialization.safe_globals`, so that the allow-list holds only while a speciesvi model loads).
The safely read contents are handed to scvi-tools' ``load`` in place of its own read of the file (a
:class:`~contextvars.ContextVar` scopes the hand-over to the one model being loaded). A file that would import
or call anything else, a truncated or corrupted file, a file written by a newer speciesvi and a folder without
``model.pt`` each give a ``ValueError`` that says what happened.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pickle
import re
import shutil
import tempfile
import warnings
import zipfile
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anndata
import numpy as np
import torch
from scvi import settings
from scvi.data._download import _download
from scvi.model.base import _archesmixin, _base_model

from .. import __version__
from ._unpickle import DefaultDicts, safe_globals

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from anndata import AnnData

logger = logging.getLogger(__name__)

#: Attribute (saved with the model by scvi-tools, as every attribute ending in ``_``) holding the speciesvi version.
VERSION_ATTR = "speciesvi_version_"
_KEYS = ("model_state_dict", "var_names", "attr_dict")
# torch's weights-only unpickler refused a global, a call or a build: the file wants more than data.
_UNSAFE = re.compile(r"Unsupported global|unrecognized function|Can only build|Unsupported class", re.IGNORECASE)
_GLOBAL = re.compile(r"GLOBAL (\S+)")
# The model being loaded: (resolved model.pt path, its safely read contents), for scvi-tools' load.
_PRELOADED: ContextVar[tuple[Path, dict] | None] = ContextVar("speciesvi_preloaded_model", default=None)


def _version_tuple(text: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", str(text))
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def _installed_version() -> str:
    return __version__


def model_file(dir_path: str | os.PathLike, prefix: str | None = None) -> Path:
    """``{prefix}model.pt`` in ``dir_path``; a ``ValueError`` if the folder or the file is missing.

    Parameters
    ----------
    dir_path
        Folder written by ``model.save()``.
    prefix
        Prefix of the saved file names.

    Returns
    -------
    pathlib.Path
        The model file.
    """
    folder = Path(dir_path)
    file = folder / f"{prefix or ''}model.pt"
    if not folder.is_dir():
        raise ValueError(f"No saved model at {folder}: the folder does not exist. Pass the folder written by save().")
    if not file.is_file():
        present = sorted(p.name for p in folder.iterdir())
        raise ValueError(
            f"The folder {folder} lacks {file.name} (it holds {present or 'nothing'}): it is not a complete saved "
            "model. Pass the folder written by model.save(), or save the model again."
        )
    return file


def load_model_file(dir_path: str | os.PathLike, prefix: str | None = None) -> dict[str, Any]:
    """Read a saved model's ``model.pt`` safely (``weights_only=True``) and check it.

    Parameters
    ----------
    dir_path
        Folder written by ``model.save()``.
    prefix
        Prefix of the saved file names.

    Returns
    -------
    dict
        ``model_state_dict``, ``var_names`` and ``attr_dict``, as scvi-tools writes them (tensors on the CPU).

    Raises
    ------
    ValueError
        If the folder or file is missing; if the file would import or call anything beyond tensors and plain
        numpy/pandas data (it could run code when loaded: refused); if it is truncated, corrupted or not a model
        file; if a newer speciesvi wrote it.
    """
    file = model_file(dir_path, prefix)
    defaultdicts = DefaultDicts()
    try:
        with torch.serialization.safe_globals([*safe_globals(), (defaultdicts, "collections.defaultdict")]):
            contents = defaultdicts.restore(torch.load(file, map_location="cpu", weights_only=True))
    except pickle.UnpicklingError as error:
        detail = (str(error).split("WeightsUnpickler error:")[-1].strip().splitlines() or ["unreadable"])[0]
        if _UNSAFE.search(str(error)):
            named = _GLOBAL.search(detail)
            what = f"would call or build {named.group(1)}" if named else f"asks for more than data ({detail})"
            raise ValueError(
                f"Refusing to load {file}: unpickling it {what}, which is not among the tensors and plain "
                "numpy/pandas data of a saved model. Such a file could run arbitrary code on this machine. Load model "
                "files only from sources you trust, and check downloads with sha256=."
            ) from error
        raise ValueError(f"{file} is truncated or corrupted ({detail}); save or download the model again.") from error
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError, IndexError) as error:
        raise ValueError(
            f"{file} is truncated or corrupted and cannot be read ({type(error).__name__}: {error}); save or "
            "download the model again."
        ) from error
    if not isinstance(contents, dict) or any(key not in contents for key in _KEYS):
        raise ValueError(
            f"{file} is not a model file written by save() (expected a dict with {list(_KEYS)}); pass the folder "
            "written by model.save()."
        )
    if not isinstance(contents["attr_dict"], dict) or "init_params_" not in contents["attr_dict"]:
        raise ValueError(f"{file} lacks the model's init_params_: it was not written by a speciesvi model's save().")
    saved = contents["attr_dict"].get(VERSION_ATTR)
    installed = _installed_version()
    if saved is not None and _version_tuple(saved) > _version_tuple(installed):
        raise ValueError(
            f"{file} was saved by speciesvi {saved}, newer than the installed {installed}; its format may differ. "
            "Upgrade speciesvi (pip install -U speciesvi) to load it."
        )
    return contents


def read_model_file(dir_path: str | os.PathLike, prefix: str | None = None, backup_url: str | None = None) -> dict:
    """:func:`load_model_file`, after downloading ``model.pt`` from ``backup_url`` if the folder lacks it (unverified)."""
    file = Path(dir_path) / f"{prefix or ''}model.pt"
    if backup_url is not None and not file.is_file():
        logger.warning(
            "Downloading %s from %s without a checksum: the file is not verified. It is read with "
            "weights_only=True, but pass a checked archive through speciesvi.model.fetch_model(url, sha256=...) "
            "where you can.",
            file.name,
            backup_url,
        )
        Path(dir_path).mkdir(parents=True, exist_ok=True)
        _download(backup_url, str(dir_path), file.name)
    return load_model_file(dir_path, prefix)


def saved_var_names(dir_path: str | os.PathLike, prefix: str | None = None) -> np.ndarray:
    """Gene names stored in a saved scvi-tools model folder (read safely, see :func:`load_model_file`)."""
    return np.asarray(load_model_file(dir_path, prefix)["var_names"])


def _read_saved_adata(dir_path: str, prefix: str | None) -> AnnData | bool:
    """The AnnData saved beside the model (``save_anndata=True``), else ``False`` with scvi-tools' warning."""
    path = Path(dir_path) / f"{prefix or ''}adata.h5ad"
    if path.is_file():
        return anndata.read_h5ad(path)
    warnings.warn(
        "Save path contains no saved anndata and no adata was passed. Model will be loaded without anndata.",
        UserWarning,
        stacklevel=settings.warnings_stacklevel,
    )
    return False


def _hand_over(original: Callable) -> Callable:
    """scvi-tools' ``_load_saved_files``, answering from the safely read file while a speciesvi model loads."""

    @functools.wraps(original)
    def load_saved_files(dir_path, load_adata, prefix=None, map_location=None, backup_url=None):
        preloaded = _PRELOADED.get()
        if preloaded is None or preloaded[0] != Path(dir_path, f"{prefix or ''}model.pt").resolve():
            return original(dir_path, load_adata, prefix=prefix, map_location=map_location, backup_url=backup_url)
        contents = preloaded[1]
        adata = _read_saved_adata(dir_path, prefix) if load_adata else None
        # copies: scvi-tools pops entries (registry, init parameters, pyro parameters) from what it is given
        return dict(contents["attr_dict"]), contents["var_names"], dict(contents["model_state_dict"]), adata

    load_saved_files.speciesvi_hand_over = True
    return load_saved_files


def _install_hand_over() -> None:
    """Route scvi-tools' reads of model files (``load`` and ``load_query_data``) through :func:`_hand_over`."""
    for module in (_base_model, _archesmixin):
        current = getattr(module, "_load_saved_files", None)
        if current is None:  # pragma: no cover - another scvi-tools layout
            raise RuntimeError(f"{module.__name__}._load_saved_files is missing; this scvi-tools is unsupported.")
        if not getattr(current, "speciesvi_hand_over", False):
            module._load_saved_files = _hand_over(current)


@contextlib.contextmanager
def preloaded(dir_path: str | os.PathLike, prefix: str | None, contents: dict[str, Any]) -> Iterator[None]:
    """While the block runs, scvi-tools reads ``{prefix}model.pt`` in ``dir_path`` as ``contents``.

    ``contents`` is what :func:`load_model_file` read from it, possibly completed (an earlier layout brought up to
    date).
    """
    _install_hand_over()
    token = _PRELOADED.set((model_file(dir_path, prefix).resolve(), contents))
    try:
        yield
    finally:
        _PRELOADED.reset(token)


class SaveLoadMixin:
    """Atomic ``save`` and a safe ``load`` that refuses an AnnData whose genes differ from the saved model's.

    ``save`` writes into a temporary folder beside the target, then moves each file in with ``os.replace``:
    a crash while writing leaves the previous files intact, never a half-written ``model.pt``. It records the
    speciesvi version (``speciesvi_version_``). ``load`` reads ``model.pt`` with ``weights_only=True`` (see
    :func:`load_model_file`): a file that would run code is refused with a ``ValueError``.
    """

    def save(self, dir_path: str | os.PathLike, prefix: str | None = None, overwrite: bool = False, **kwargs) -> None:
        """Save the model to ``dir_path`` (see :meth:`scvi.model.base.BaseModelClass.save`), atomically per file.

        Parameters
        ----------
        dir_path
            Folder to save into; created if missing.
        prefix
            Prefix of the saved file names.
        overwrite
            Replace the files of an earlier save; without it an existing folder is refused.
        **kwargs
            Passed on to :meth:`scvi.model.base.BaseModelClass.save` (``save_anndata``, ``save_kwargs``, ...).
        """
        target = Path(dir_path)
        if target.exists() and not overwrite:
            raise ValueError(f"{target} already exists. Pass overwrite=True to replace the saved model.")
        target.parent.mkdir(parents=True, exist_ok=True)
        setattr(self, VERSION_ATTR, _installed_version())
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            super().save(str(staging), prefix=prefix, overwrite=True, **kwargs)
            target.mkdir(exist_ok=True)
            for file in staging.iterdir():
                os.replace(file, target / file.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @classmethod
    def load(
        cls,
        dir_path: str | os.PathLike,
        adata: AnnData | None = None,
        prefix: str | None = None,
        backup_url: str | None = None,
        **kwargs,
    ):
        """Load a saved model (see :meth:`scvi.model.base.BaseModelClass.load`) safely, checking the AnnData first.

        Parameters
        ----------
        dir_path
            Folder written by ``save``.
        adata
            AnnData with the same genes, in the same order, as the one the model was trained on.
        prefix
            Prefix of the saved file names.
        backup_url
            URL to download ``model.pt`` from if the folder lacks it (unverified: prefer
            :func:`speciesvi.model.fetch_model` with ``sha256=``).
        **kwargs
            Passed to :meth:`scvi.model.base.BaseModelClass.load` (``accelerator``, ``device`` ...).

        Raises
        ------
        ValueError
            See :func:`load_model_file`; and if ``adata``'s genes differ from the saved model's.
        """
        return cls._load_contents(
            dir_path, read_model_file(dir_path, prefix, backup_url), adata=adata, prefix=prefix, **kwargs
        )

    @classmethod
    def _load_contents(
        cls, dir_path: str | os.PathLike, contents: dict[str, Any], adata: AnnData | None = None, **kwargs
    ):
        """scvi-tools' ``load`` of ``dir_path``, reading the model file as ``contents`` (see :func:`preloaded`)."""
        expected = np.asarray(contents["var_names"])
        if adata is not None and (
            len(expected) != adata.n_vars or not np.array_equal(expected, adata.var_names.to_numpy())
        ):
            raise ValueError(
                f"The AnnData's genes ({adata.n_vars}) differ from the {len(expected)} genes the saved model was "
                "trained on (names and order must match). Subset and reorder it with adata[:, saved_genes], "
                "where saved_genes is the var_names of the training data."
            )
        with preloaded(dir_path, kwargs.get("prefix"), contents):
            return super().load(str(dir_path), adata=adata, **kwargs)
