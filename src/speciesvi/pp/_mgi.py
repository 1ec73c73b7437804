"""The MGI vertebrate homology report: download once, cache atomically, reuse offline."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

logger = logging.getLogger(__name__)

MGI_URL = "https://www.informatics.jax.org/downloads/reports/HOM_AllOrganism.rpt"
MGI_FILENAME = "HOM_AllOrganism.rpt"
_MGI_HEADER = "DB Class Key"


def default_cache_dir() -> Path:
    """Cache folder: ``$SPECIESVI_CACHE_DIR``, else ``$XDG_CACHE_HOME/speciesvi``, else ``~/.cache/speciesvi``."""
    if env := os.environ.get("SPECIESVI_CACHE_DIR"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "speciesvi"


def cached_mgi_report(cache_dir: str | Path | None = None) -> Path | None:
    """Path of the cached MGI report, or ``None`` when it has not been downloaded yet."""
    path = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = path / MGI_FILENAME
    return path if path.is_file() else None


def mgi_report(cache_dir: str | Path | None = None, *, timeout: float = 120.0) -> Path:
    """Return the cached MGI report, downloading it first if needed.

    The download goes to a temporary file in the cache folder that is renamed into place only once it is complete
    and looks like the report, so an interrupted download never leaves a truncated cache behind.
    """
    if (cached := cached_mgi_report(cache_dir)) is not None:
        return cached
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / MGI_FILENAME
    logger.info("Downloading the MGI homology report from %s to %s", MGI_URL, dest)
    fd, tmp_name = tempfile.mkstemp(prefix=MGI_FILENAME + ".", suffix=".part", dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(MGI_URL, timeout=timeout) as response:
                    shutil.copyfileobj(response, out)
            except (urllib.error.URLError, OSError) as err:
                raise ConnectionError(
                    f"Could not download the MGI homology report from {MGI_URL} ({err}). Without network, use "
                    "source='offline' (human/mouse), a downloaded HOM_AllOrganism.rpt / Ensembl BioMart / HCOP file "
                    f"as source, or copy HOM_AllOrganism.rpt into {folder}."
                ) from err
        with tmp.open(encoding="utf-8", errors="replace") as handle:
            header = handle.readline()
        if _MGI_HEADER not in header:
            raise ValueError(
                f"The file downloaded from {MGI_URL} is not the MGI homology report (first line: {header[:80]!r})."
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest
