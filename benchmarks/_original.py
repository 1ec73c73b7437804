"""Run the ORIGINAL scSpecies implementation (PyPI ``scspecies==0.1.4``) from speciesvi benchmarks.

The original lives in its own virtual environment (``benchmarks/.envs/scspecies``, built by
``benchmarks/peers/setup_scspecies_env.sh``) and is driven by ``benchmarks/peers/run_scspecies.py``
in a subprocess, so nothing of it is imported into the speciesvi environment. Only the standard
library is used here.

Example
-------
>>> from benchmarks._original import run_original  # doctest: +SKIP
>>> res = run_original(
...     "benchmarks/results/original_seed1", seed=1, stages=("context", "target", "transfer")
... )  # doctest: +SKIP
>>> res["metrics"]["similarity"]["balanced_accuracy"]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
ENV_DIR = BENCH_DIR / ".envs" / "scspecies"
WORK_DIR = BENCH_DIR / ".work"
SETUP_SCRIPT = BENCH_DIR / "peers" / "setup_scspecies_env.sh"
RUNNER = BENCH_DIR / "peers" / "run_scspecies.py"
STAMP = ENV_DIR / ".speciesvi_setup_stamp"

SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
DEFAULT_CONTEXT = SHARED_DATA / "baron_mouse_pancreas.h5ad"
DEFAULT_TARGET = SHARED_DATA / "baron_human_pancreas.h5ad"
DEFAULT_ORTHOLOGS = SHARED_DATA / "ensembl_human2mouse_orthologs.csv.gz"

ALL_STAGES = ("context", "target", "transfer", "similarity_df", "lfc")

__all__ = ["ALL_STAGES", "OriginalRunError", "ensure_env", "env_python", "run_original"]


class OriginalRunError(RuntimeError):
    """The original implementation's run failed; ``log_path`` points at its stderr log."""

    def __init__(self, message: str, log_path: Path | None = None):
        super().__init__(message)
        self.log_path = log_path


def env_python() -> Path:
    """Path of the python interpreter of the scspecies environment (may not exist yet)."""
    return ENV_DIR / "bin" / "python"


def ensure_env(*, force: bool = False, quiet: bool = True) -> Path:
    """Create the scspecies environment if needed and return its python interpreter.

    Idempotent: the setup script is a no-op when its stamp file matches. With ``force=True`` the
    environment is rebuilt from scratch.
    """
    py = env_python()
    env = dict(os.environ)  # the script itself checks its stamp; a current one makes it a no-op
    if force:
        env["FORCE"] = "1"
    proc = subprocess.run(
        ["bash", str(SETUP_SCRIPT)],
        env=env,
        stdout=subprocess.PIPE if quiet else None,
        stderr=subprocess.STDOUT if quiet else None,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        tail = (proc.stdout or "")[-4000:] if quiet else ""
        raise OriginalRunError(f"setup of {ENV_DIR} failed (exit {proc.returncode}):\n{tail}")
    if not py.exists():
        raise OriginalRunError(f"setup finished but {py} does not exist")
    return py


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def run_original(
    out_dir: str | os.PathLike,
    *,
    seed: int,
    stages: Iterable[str] | str = ALL_STAGES,
    epochs_context: int = 40,
    epochs_target: int = 40,
    n_top_genes: int = 4000,
    lfc_samples: int = 50000,
    timeout: float | None = None,
    context: str | os.PathLike = DEFAULT_CONTEXT,
    target: str | os.PathLike = DEFAULT_TARGET,
    orthologs: str | os.PathLike = DEFAULT_ORTHOLOGS,
    labels_key: str = "cell_ontology_class",
    batch_key: str = "donor",
    npy_dir: str | os.PathLike | None = None,
    workdir: str | os.PathLike | None = None,
    threads: int = 0,
    log_path: str | os.PathLike | None = None,
    extra_args: Sequence[str] = (),
) -> dict:
    """Run the original scSpecies workflow in its own environment and return what it measured.

    Parameters
    ----------
    out_dir
        Where ``timings.json``, ``metrics.json``, ``labels.csv`` (and ``similarity_df.csv``,
        ``lfc/*.csv`` when those stages ran) are written.
    seed
        Random seed passed to the original (``scSpecies(random_seed=...)``).
    stages
        Any of ``context, target, transfer, similarity_df, lfc`` (iterable or comma string);
        missing prerequisites are added by the runner. Preprocessing always runs.
    epochs_context, epochs_target, n_top_genes, lfc_samples
        Workflow settings; ``n_top_genes=0`` keeps all genes.
    timeout
        Seconds before the subprocess is killed (``None`` = no limit).
    npy_dir
        Where ``latent_context.npy``/``latent_target.npy`` go. Defaults to a folder under the
        git-ignored ``benchmarks/.work/`` so that ``out_dir`` only holds small files.
    workdir
        Scratch working directory of the original (it writes ``./data`` and model files there);
        defaults to ``benchmarks/.work/scspecies_<out_dir name>``.
    threads
        ``torch.set_num_threads`` inside the run (0 = torch default).
    log_path
        File receiving the run's stderr/stdout; defaults to ``benchmarks/.work/<out name>.log``.

    Returns
    -------
    dict with keys ``timings``, ``metrics`` (parsed JSON), ``out_dir``, ``npy_dir``, ``log_path``
    and ``returncode``.

    Raises
    ------
    ValueError
        For an unknown stage name.
    OriginalRunError
        When the run fails or times out (partial outputs stay in ``out_dir``).
    """
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    npy = Path(npy_dir).resolve() if npy_dir is not None else (WORK_DIR / f"npy_{out.name}").resolve()
    log_file = Path(log_path).resolve() if log_path is not None else (WORK_DIR / f"{out.name}.log").resolve()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    stage_list = [s.strip() for s in (stages.split(",") if isinstance(stages, str) else stages) if s.strip()]
    unknown = sorted(set(stage_list) - set(ALL_STAGES))
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; choose from {ALL_STAGES}")

    py = ensure_env()
    cmd = [
        str(py),
        str(RUNNER),
        "--context",
        str(Path(context).resolve()),
        "--target",
        str(Path(target).resolve()),
        "--orthologs",
        str(Path(orthologs).resolve()),
        "--labels-key",
        labels_key,
        "--batch-key",
        batch_key,
        "--seed",
        str(int(seed)),
        "--epochs-context",
        str(int(epochs_context)),
        "--epochs-target",
        str(int(epochs_target)),
        "--n-top-genes",
        str(int(n_top_genes)),
        "--stages",
        ",".join(stage_list),
        "--lfc-samples",
        str(int(lfc_samples)),
        "--threads",
        str(int(threads)),
        "--out",
        str(out),
        "--npy-dir",
        str(npy),
    ]
    if workdir is not None:
        cmd += ["--workdir", str(Path(workdir).resolve())]
    cmd += list(extra_args)

    env = dict(os.environ)
    for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):  # keep our venv out of theirs
        env.pop(var, None)
    env["MPLBACKEND"] = "Agg"
    env["PYTHONUNBUFFERED"] = "1"

    with open(log_file, "w") as fh:
        try:
            proc = subprocess.run(
                cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=str(REPO_ROOT), timeout=timeout, check=False
            )
            rc = proc.returncode
        except subprocess.TimeoutExpired as exc:
            raise OriginalRunError(f"original run timed out after {timeout} s; log: {log_file}", log_file) from exc

    result = {
        "timings": _read_json(out / "timings.json"),
        "metrics": _read_json(out / "metrics.json"),
        "out_dir": out,
        "npy_dir": npy,
        "log_path": log_file,
        "returncode": rc,
    }
    if rc != 0:
        err = (result["timings"] or {}).get("error", "see log")
        raise OriginalRunError(f"original run failed (exit {rc}): {err}; log: {log_file}", log_file)
    return result


if __name__ == "__main__":  # tiny CLI: python benchmarks/_original.py OUT_DIR SEED [stage,...]
    if len(sys.argv) < 3:
        sys.exit("usage: python benchmarks/_original.py OUT_DIR SEED [stages]")
    res = run_original(sys.argv[1], seed=int(sys.argv[2]), stages=sys.argv[3] if len(sys.argv) > 3 else ALL_STAGES)
    print(json.dumps({"timings": res["timings"], "metrics": res["metrics"]}, indent=2, default=str))
