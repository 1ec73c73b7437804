"""Read and write a species pair, with its results, as one MuData ``.h5mu`` file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import anndata as ad

#: ``mdata.uns`` entry that records which modality is the context and which the target.
ROLES_KEY = "speciesvi_roles"


def _check_name(name: str, role: str) -> str:
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"{role}_name must be a non-empty string without '/', got {name!r}.")
    return name


def write_h5mu(
    filename: str | os.PathLike,
    context: ad.AnnData,
    target: ad.AnnData,
    *,
    context_name: str = "context",
    target_name: str = "target",
) -> Path:
    """Write the context and target AnnData, with everything speciesvi wrote into them, to one ``.h5mu`` file.

    The modalities are named after the species; the file also records which one is the context, so that
    :func:`read_h5mu` returns the pair in the right order. The inputs are not changed, and the file is written
    to a temporary name first and moved into place, so an interrupted write never leaves a broken file.

    Parameters
    ----------
    filename
        Path of the ``.h5mu`` file (overwritten if it exists).
    context, target
        The two species' AnnData objects, e.g. after :meth:`speciesvi.TargetVI.transfer_labels`.
    context_name, target_name
        Modality names, e.g. ``"mouse"`` and ``"human"``.

    Returns
    -------
    pathlib.Path
        The written file.

    Examples
    --------
    >>> speciesvi.io.write_h5mu("baron.h5mu", mouse, human, context_name="mouse", target_name="human")
    >>> mouse, human = speciesvi.io.read_h5mu("baron.h5mu")
    """
    import mudata as md

    for adata, role in ((context, "context"), (target, "target")):
        if not isinstance(adata, ad.AnnData):
            raise TypeError(f"{role} must be an AnnData, got {type(adata).__name__}.")
    _check_name(context_name, "context")
    _check_name(target_name, "target")
    if context_name == target_name:
        raise ValueError(f"context_name and target_name must differ, both are {context_name!r}.")
    path = Path(filename)
    if path.suffix != ".h5mu":
        raise ValueError(f"filename must end in .h5mu, got {path.name!r}.")
    # MuData keeps references to the modalities and may rewrite their names; give it private copies.
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(suffix=".h5mu", prefix=f".{path.stem}-", dir=path.parent)
    os.close(handle)
    try:
        with md.set_options(pull_on_update=False):  # the behaviour mudata 0.4 makes the default
            mdata = md.MuData({context_name: context.copy(), target_name: target.copy()})
            mdata.uns[ROLES_KEY] = {"context": context_name, "target": target_name}
            mdata.write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def read_h5mu(
    filename: str | os.PathLike, *, context_name: str | None = None, target_name: str | None = None
) -> tuple[ad.AnnData, ad.AnnData]:
    """Read a species pair written by :func:`write_h5mu` (or any ``.h5mu`` with two species modalities).

    Parameters
    ----------
    filename
        The ``.h5mu`` file.
    context_name, target_name
        Modality names; default to the roles the file records (:func:`write_h5mu` records them).

    Returns
    -------
    context, target
        The two AnnData objects, with the results they were written with.

    Examples
    --------
    >>> mouse, human = speciesvi.io.read_h5mu("baron.h5mu")
    """
    import mudata as md

    path = Path(filename)
    if not path.is_file():
        raise FileNotFoundError(f"No .h5mu file at {path}.")
    with md.set_options(pull_on_update=False):
        mdata = md.read_h5mu(path)
    roles = dict(mdata.uns.get(ROLES_KEY, {}))
    context_name = context_name or roles.get("context")
    target_name = target_name or roles.get("target")
    if context_name is None or target_name is None:
        raise ValueError(
            f"{path.name} does not record which modality is the context; pass context_name= and target_name= "
            f"(its modalities: {list(mdata.mod)})."
        )
    missing = [name for name in (context_name, target_name) if name not in mdata.mod]
    if missing:
        raise ValueError(f"{path.name} has no modality {missing}; it holds {list(mdata.mod)}.")
    return mdata.mod[context_name], mdata.mod[target_name]
