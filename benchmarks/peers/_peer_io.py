"""Shared command line and result files of the benchmark peers (standard library, numpy and pandas only).

Every peer module (``knn_homologous``, ``ingest``, ``celltypist_peer``, ``scanvi_peer``, ``speciesvi_peer``)
is run as a script in a fresh process by ``benchmarks/run.py``, possibly in its own virtual environment, and
writes into ``--out``:

* ``predictions.csv``: one row per target cell (index: obs name), columns ``label:<variant>`` and, where the
  method has one, ``confidence:<variant>`` (higher = more confident);
* ``result.json``: ``fit_s`` (reference training), ``query_s`` (target-specific training or search),
  ``predict_s`` (per variant), ``peak_rss_mb`` (``VmHWM`` of the process, which,
  unlike ``ru_maxrss``, is not inherited over ``exec``), the load averages around the timings, the
  parameters and the package versions.

The target data the peers receive carry no cell-type labels: only ``benchmarks/run.py`` reads the human
annotation, after the predictions are written.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import pandas as pd

LABELS = "cell_ontology_class"
BATCH = "donor"


def parser(description: str) -> argparse.ArgumentParser:
    """The command line every peer understands."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--context", required=True, type=Path, help="context (mouse) .h5ad: raw counts, labels, batches")
    p.add_argument("--target", required=True, type=Path, help="target (human) .h5ad: raw counts, batches, no labels")
    p.add_argument("--out", required=True, type=Path, help="folder for predictions.csv and result.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=40, help="training epochs per model (neural methods)")
    p.add_argument("--accelerator", default="cpu", help="'cpu', 'gpu' or 'auto' (neural methods)")
    p.add_argument("--labels-key", default=LABELS)
    p.add_argument("--batch-key", default=BATCH)
    return p


def peak_rss_mb() -> float:
    """High-water mark of this process's resident memory in MB (``VmHWM``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:  # pragma: no cover - not Linux
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def loadavg() -> float:
    """One-minute load average of the machine."""
    return round(os.getloadavg()[0], 2)


def versions(*packages: str) -> dict[str, str]:
    """Installed versions of ``packages`` (missing ones are left out)."""
    found = {"python": platform.python_version()}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


class Recorder:
    """Collects the wall times (with load averages) of a peer run and writes its result files."""

    def __init__(self, args: argparse.Namespace, method: str):
        self.args = args
        self.result: dict = {
            "method": method,
            "seed": args.seed,
            "fit_s": 0.0,
            "query_s": 0.0,
            "predict_s": {},
            "loadavg": {},
            "params": {},
            "cpu_count": os.cpu_count(),
        }
        self.predictions = pd.DataFrame()

    @contextmanager
    def timed(self, name: str, variant: str | None = None) -> Iterator[None]:
        """Time a block: ``name='fit'`` (context/reference training, reusable for any target) adds to ``fit_s``,
        ``name='query'`` (work specific to the target data set: query training, neighbour search) to
        ``query_s``, ``name='predict'`` (labelling the target cells) to ``predict_s[variant]``."""
        start_load = loadavg()
        start = time.perf_counter()
        yield
        seconds = time.perf_counter() - start
        key = name if variant is None else f"{name}:{variant}"
        self.result["loadavg"][key] = [start_load, loadavg()]
        if name in ("fit", "query"):
            self.result[f"{name}_s"] = round(self.result[f"{name}_s"] + seconds, 3)
        else:
            self.result["predict_s"][variant or "default"] = round(
                self.result["predict_s"].get(variant or "default", 0.0) + seconds, 3
            )

    def add(self, variant: str, obs_names, labels, confidence=None) -> None:
        """Record the predictions of one variant."""
        frame = pd.DataFrame({f"label:{variant}": pd.Series(labels, index=obs_names).astype(str)})
        if confidence is not None:
            frame[f"confidence:{variant}"] = pd.Series(confidence, index=obs_names).astype(float)
        self.predictions = frame if self.predictions.empty else self.predictions.join(frame)

    def write(self, **extra) -> None:
        """Write ``predictions.csv`` and ``result.json`` into ``--out``."""
        out: Path = self.args.out
        out.mkdir(parents=True, exist_ok=True)
        self.predictions.index.name = "obs_name"
        self.predictions.to_csv(out / "predictions.csv")
        self.result.update(extra)
        self.result["peak_rss_mb"] = peak_rss_mb()
        (out / "result.json").write_text(json.dumps(self.result, indent=2, default=str))
