"""Pretrained models: archives, cached downloads and loading a model from a folder, an archive or a URL."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from ._bundled import load_bundled
from ._from_scvi import adopt_scvi_model

if TYPE_CHECKING:
    from anndata import AnnData
    from scvi.model import SCVI

logger = logging.getLogger(__name__)

#: Environment variable that overrides the default cache folder of downloaded models.
CACHE_ENV = "SPECIESVI_CACHE_DIR"
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
_URL_SCHEMES = ("http", "https", "ftp", "file")
_CHUNK = 1 << 20


def default_cache_dir() -> Path:
    """Folder of downloaded and unpacked models: ``$SPECIESVI_CACHE_DIR``, else ``$XDG_CACHE_HOME/speciesvi/models``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return base / "speciesvi" / "models"


def _is_url(source: str) -> bool:
    return urllib.parse.urlparse(source).scheme in _URL_SCHEMES


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def archive_model(dir_path: str | os.PathLike, archive_path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Pack a saved model folder into a ``.tar.gz`` archive, to publish or copy it as one file.

    The archive holds the folder's files at its top level (sub-folders, such as the ``context`` of a TargetVI saved
    by an earlier speciesvi, are kept). It is written to a temporary file first and moved into place, so a failed
    write leaves no archive.

    Parameters
    ----------
    dir_path
        Folder written by ``model.save()``.
    archive_path
        The archive to write (``.tar.gz``).
    overwrite
        Replace an existing archive.

    Returns
    -------
    pathlib.Path
        ``archive_path``.

    Examples
    --------
    >>> context.save("mouse_context", overwrite=True)
    >>> speciesvi.model.archive_model("mouse_context", "mouse_context.tar.gz")
    >>> context = speciesvi.ContextVI.load("mouse_context.tar.gz", adata=mouse)
    """
    folder, archive = Path(dir_path), Path(archive_path)
    if not any(folder.glob("*model.pt")):
        raise ValueError(f"{folder} holds no saved model (no model.pt); save the model there first.")
    if archive.exists() and not overwrite:
        raise ValueError(f"{archive} already exists; pass overwrite=True to replace it.")
    archive.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{archive.name}.", dir=archive.parent)
    os.close(handle)
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for path in sorted(folder.rglob("*")):
                tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
        os.replace(tmp, archive)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return archive


def _download(url: str, cache_dir: Path, force_download: bool, timeout: float) -> Path:
    """Download ``url`` into ``cache_dir/downloads`` once (atomically); later calls reuse the file."""
    name = Path(urllib.parse.urlparse(url).path).name or "model"
    target = cache_dir / "downloads" / f"{hashlib.sha1(url.encode()).hexdigest()[:16]}-{name}"
    if target.is_file() and not force_download:
        logger.info("Using the cached download %s of %s.", target, url)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    logger.info("Downloading %s to %s.", url, target)
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out, _CHUNK)
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ConnectionError(
            f"Could not download the model from {url} ({reason}). If this machine is offline, download the "
            f"archive elsewhere and pass its local path instead of the URL, or copy it to {target}."
        ) from error
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


def _safe_members(names: list[str], dest: Path) -> None:
    root = dest.resolve()
    for name in names:
        if Path(name).is_absolute() or not (root / name).resolve().is_relative_to(root):
            raise ValueError(f"Refusing to unpack the archive: member {name!r} would land outside {dest}.")


def _unpack(archive: Path, cache_dir: Path, force: bool) -> Path:
    """Unpack an archive into ``cache_dir`` (keyed by its SHA-256) once; return the folder."""
    stem = archive.name
    for suffix in _ARCHIVE_SUFFIXES:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    target = cache_dir / f"{stem}-{_sha256(archive)[:16]}"
    if target.is_dir() and not force:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=cache_dir))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zipped:
                _safe_members(zipped.namelist(), staging)
                zipped.extractall(staging)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tar:
                members = tar.getmembers()
                _safe_members([m.name for m in members], staging)
                if any(not (m.isfile() or m.isdir()) for m in members):
                    raise ValueError(f"{archive} contains links or special files; a model archive holds plain files.")
                extract_kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(staging, **extract_kwargs)
        else:
            raise ValueError(f"{archive} is neither a tar nor a zip archive of a saved model.")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _model_folder(folder: Path, prefix: str | None, source: str) -> Path:
    """The shallowest folder under ``folder`` that holds ``{prefix}model.pt``."""
    file_name = f"{prefix or ''}model.pt"
    found = sorted(folder.rglob(file_name), key=lambda p: (len(p.parts), str(p)))
    if not found:
        raise ValueError(
            f"{source} holds no saved model ({file_name} not found); pass a folder or archive written by save()."
        )
    return found[0].parent


def fetch_model(
    source: str | os.PathLike,
    prefix: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    force_download: bool = False,
    sha256: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Local folder of a saved model given as a folder, a local archive or a URL (downloaded once, cached).

    Parameters
    ----------
    source
        A folder written by ``model.save()``; a ``.tar.gz``/``.tgz``/``.tar``/``.zip`` archive of one (see
        :func:`archive_model`); or the URL of such an archive (``https://``, ``http://``, ``ftp://``,
        ``file://``).
    prefix
        Prefix of the saved file names.
    cache_dir
        Where downloads and unpacked archives are kept; defaults to :func:`default_cache_dir`.
    force_download
        Download and unpack again even if the cache holds the model.
    sha256
        Expected SHA-256 of the archive; a download or archive that does not match is refused. A URL without
        it logs a warning: the download is then unverified.
    timeout
        Seconds to wait for the server.

    Returns
    -------
    pathlib.Path
        The folder with ``{prefix}model.pt``.

    Examples
    --------
    >>> folder = speciesvi.model.fetch_model("https://example.org/mouse_pancreas_context.tar.gz")
    >>> context = speciesvi.ContextVI.load(folder, adata=mouse)
    """
    text = os.fspath(source)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if _is_url(text):
        if sha256 is None:
            logger.warning(
                "Loading a model from %s without sha256=: the download is not verified, so a tampered or corrupted "
                "file would go unnoticed. speciesvi reads model files with weights_only=True, which refuses files "
                "that would run code, but only a checksum proves the file is the one published. Pass sha256= with "
                "the archive's published SHA-256.",
                text,
            )
        archive = _download(text, cache, force_download, timeout)
    else:
        path = Path(text).expanduser()
        if path.is_dir():
            if sha256 is not None:
                raise ValueError("sha256= checks archives; pass the archive rather than an unpacked folder.")
            return _model_folder(path, prefix, text) if not (path / f"{prefix or ''}model.pt").is_file() else path
        if not path.is_file():
            raise ValueError(f"{text} is neither a saved model folder, an archive nor a URL (nothing there).")
        archive = path
    if sha256 is not None and _sha256(archive) != sha256.lower():
        if _is_url(text):
            archive.unlink(missing_ok=True)
        raise ValueError(f"The archive from {text} does not have the expected SHA-256 {sha256}; it was not used.")
    return _model_folder(_unpack(archive, cache, force_download), prefix, text)


class PretrainedMixin:
    """``load`` from a folder, an archive or a URL, the pretrained models shipped with speciesvi, and SCVI adoption."""

    @classmethod
    def load(
        cls,
        dir_path: str | os.PathLike,
        adata: AnnData | None = None,
        prefix: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        force_download: bool = False,
        sha256: str | None = None,
        **kwargs,
    ):
        """Load a saved model from a folder, a local archive or a URL, checking the AnnData's genes first.

        Parameters
        ----------
        dir_path
            Folder written by ``save``, an archive of it (``.tar.gz``, ``.zip``) or the URL of one; archives
            and downloads are unpacked once into the cache (see :func:`speciesvi.model.fetch_model`).
        adata
            AnnData with the same genes, in the same order, as the one the model was trained on.
        prefix
            Prefix of the saved file names.
        cache_dir
            Cache of downloads and unpacked archives; defaults to ``$SPECIESVI_CACHE_DIR`` or
            ``~/.cache/speciesvi/models``.
        force_download
            Download and unpack again.
        sha256
            Expected SHA-256 of the archive; a URL without it logs a warning (the download is unverified). Model
            files are read with ``weights_only=True`` either way: a file that would run code is refused.
        **kwargs
            Passed to :meth:`scvi.model.base.BaseModelClass.load` (``accelerator``, ``device`` ...).

        Examples
        --------
        >>> context = speciesvi.ContextVI.load("mouse_context", adata=mouse)
        >>> context = speciesvi.ContextVI.load("https://example.org/mouse_context.tar.gz", adata=mouse)
        """
        folder = fetch_model(dir_path, prefix, cache_dir, force_download, sha256)
        return super().load(folder, adata=adata, prefix=prefix, **kwargs)

    @classmethod
    def load_pretrained(cls, name: str, adata: AnnData | None = None, **kwargs):
        """Load a pretrained model shipped with speciesvi, offline, with its training AnnData attached.

        ``"baron_mouse_pancreas"``: a ContextVI of the Baron et al. (2016) mouse pancreas demo data (1,886 cells,
        2 donors, 12 cell types in ``obs["cell_ontology_class"]``) on 5,406 genes: the mouse side of
        :func:`speciesvi.pp.select_genes` against the human demo data after :func:`speciesvi.pp.translate_genes`,
        i.e. the mouse most variable genes plus the homologs of the human ones. Built by
        ``scripts/make_pretrained_context.py`` (40 epochs, seed 0); its weights are stored in half precision
        and loaded as float32. The model's genes are fixed: translate the target to them (see
        ``docs/pretrained.md``).

        Parameters
        ----------
        name
            The pretrained model; an unknown name gives a ``ValueError`` listing the known ones.
        adata
            The context AnnData to attach (raw counts with the model's genes and ``obs`` columns ``donor`` and
            ``cell_ontology_class``). ``None`` (default) attaches the AnnData the model was trained on, shipped with
            speciesvi (:func:`speciesvi.datasets.baron_pancreas`). An AnnData with more genes is restricted to the
            model's, as a copy; ``model.adata`` is the AnnData in use.
        **kwargs
            Passed to :meth:`load` (``accelerator``, ``device`` ...).

        Returns
        -------
        ContextVI
            The trained model; ``model.adata`` is the context AnnData to pass to
            :func:`speciesvi.pp.translate_genes` and :func:`speciesvi.pp.homolog_neighbors`.

        Examples
        --------
        >>> context = speciesvi.ContextVI.load_pretrained("baron_mouse_pancreas")
        >>> mouse = context.adata
        >>> mouse.obsm["X_speciesvi"] = context.get_latent_representation()
        """
        return load_bundled(cls, name, adata=adata, **kwargs)

    @classmethod
    def from_scvi_model(
        cls,
        scvi_model: SCVI,
        adata: AnnData | None = None,
        labels_key: str | None = None,
        library_epochs: int = 10,
        **train_kwargs,
    ):
        """Adopt a trained :class:`scvi.model.SCVI` (e.g. from scvi-hub) as a context model.

        See :func:`speciesvi.model.context_from_scvi` for what carries over and what does not.

        Parameters
        ----------
        scvi_model
            A trained SCVI model of the context species.
        adata
            The context AnnData; defaults to the SCVI model's. Its genes must be the SCVI model's.
        labels_key
            ``adata.obs`` column of the context labels; defaults to the SCVI model's ``labels_key``.
        library_epochs
            Epochs to fit the library encoder when the SCVI model uses observed library sizes.
        **train_kwargs
            Passed to ``train`` while fitting the library encoder.

        Examples
        --------
        >>> scvi.model.SCVI.setup_anndata(mouse, batch_key="donor", labels_key="cell_ontology_class")
        >>> reference = scvi.model.SCVI(mouse, n_latent=10)
        >>> reference.train()
        >>> context = speciesvi.ContextVI.from_scvi_model(reference)
        >>> target = speciesvi.TargetVI(human, context)
        """
        return adopt_scvi_model(
            cls, scvi_model, adata=adata, labels_key=labels_key, library_epochs=library_epochs, **train_kwargs
        )
