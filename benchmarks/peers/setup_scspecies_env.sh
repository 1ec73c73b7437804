#!/usr/bin/env bash
# Create the isolated virtual environment in which the ORIGINAL scSpecies
# implementation (PyPI scspecies==0.1.4) is run for side-by-side benchmarks.
#
#   bash benchmarks/peers/setup_scspecies_env.sh          # idempotent
#   FORCE=1 bash benchmarks/peers/setup_scspecies_env.sh  # rebuild
#
# The venv lives in benchmarks/.envs/scspecies (git-ignored). A stamp file
# records a successful install; a rerun with the same spec is a no-op.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BENCH_DIR="$(dirname "$HERE")"
ENV_DIR="${SCSPECIES_ENV_DIR:-$BENCH_DIR/.envs/scspecies}"
PYTHON="${PYTHON:-python3}"

# torch must come first and be pinned exactly: any looser spec lets pip
# resolve a CUDA build and pull gigabytes of nvidia-* wheels.
TORCH_SPEC="torch==2.13.0"
SCSPECIES_SPEC="scspecies==0.1.4"
# scikit-misc: needed by the original's n_top_genes (scanpy seurat_v3 HVGs).
# muon==0.1.7: scspecies allows muon>=0.1.7,<0.2 and calls
# mu.set_options(pull_on_update=False); only muon 0.1.7 forwards that option to
# mudata, 0.1.8/0.1.9 reject it ("There is no option 'pull_on_update'").
EXTRA_SPECS=(scikit-misc "muon==0.1.7")
SPEC_ID="v2 $TORCH_SPEC $SCSPECIES_SPEC ${EXTRA_SPECS[*]}"
STAMP="$ENV_DIR/.speciesvi_setup_stamp"

if [[ "${FORCE:-0}" != "1" && -f "$STAMP" && "$(cat "$STAMP")" == "$SPEC_ID" \
      && -x "$ENV_DIR/bin/python" ]]; then
  echo "[setup_scspecies_env] up to date: $ENV_DIR" >&2
  exit 0
fi

if [[ "${FORCE:-0}" == "1" && -d "$ENV_DIR" ]]; then
  rm -rf "$ENV_DIR"
fi

mkdir -p "$(dirname "$ENV_DIR")"
if [[ ! -x "$ENV_DIR/bin/python" ]]; then
  echo "[setup_scspecies_env] creating venv $ENV_DIR" >&2
  "$PYTHON" -m venv "$ENV_DIR"
fi
PY="$ENV_DIR/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check --no-input)

"${PIP[@]}" install --upgrade pip setuptools wheel >&2
echo "[setup_scspecies_env] installing $TORCH_SPEC" >&2
"${PIP[@]}" install "$TORCH_SPEC" >&2
echo "[setup_scspecies_env] installing $SCSPECIES_SPEC ${EXTRA_SPECS[*]}" >&2
"${PIP[@]}" install "$TORCH_SPEC" "$SCSPECIES_SPEC" "${EXTRA_SPECS[@]}" >&2

# Import check: everything run_scspecies.py touches must import.
"$PY" - <<'PYEOF' >&2
import importlib
mods = ["torch", "numpy", "pandas", "scipy", "sklearn", "anndata", "scanpy",
        "mudata", "skmisc.loess", "scspecies", "scspecies.models",
        "scspecies.preprocessing"]
for m in mods:
    importlib.import_module(m)
import torch, scspecies  # noqa: E401
import muon
muon.set_options(pull_on_update=False)  # what scspecies' create_mdata calls first
print("[setup_scspecies_env] imports ok: torch", torch.__version__,
      "cuda", torch.version.cuda)
PYEOF

echo "$SPEC_ID" > "$STAMP"
echo "[setup_scspecies_env] done: $ENV_DIR" >&2
