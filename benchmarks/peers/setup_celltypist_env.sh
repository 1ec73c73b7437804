#!/usr/bin/env bash
# Create the isolated virtual environment in which CellTypist runs for the
# benchmark suite (benchmarks/peers/celltypist_peer.py).
#
#   bash benchmarks/peers/setup_celltypist_env.sh          # idempotent
#   FORCE=1 bash benchmarks/peers/setup_celltypist_env.sh  # rebuild
#
# The venv lives in benchmarks/.envs/celltypist (git-ignored). A stamp file
# records a successful install; a rerun with the same spec is a no-op.
# celltypist 1.7.1 uses scikit-learn APIs removed in 1.8, hence the pin; pynndescent
# 0.7.0 breaks scanpy 1.11.5 (which CellTypist's majority voting calls).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BENCH_DIR="$(dirname "$HERE")"
ENV_DIR="${CELLTYPIST_ENV_DIR:-$BENCH_DIR/.envs/celltypist}"
PYTHON="${PYTHON:-python3}"

SPECS=("celltypist==1.7.1" "scikit-learn<1.8" "pynndescent<0.7")
SPEC_ID="v2 ${SPECS[*]}"
STAMP="$ENV_DIR/.speciesvi_setup_stamp"

if [[ "${FORCE:-0}" != "1" && -f "$STAMP" && "$(cat "$STAMP")" == "$SPEC_ID" \
      && -x "$ENV_DIR/bin/python" ]]; then
  echo "[setup_celltypist_env] up to date: $ENV_DIR" >&2
  exit 0
fi

if [[ "${FORCE:-0}" == "1" && -d "$ENV_DIR" ]]; then
  rm -rf "$ENV_DIR"
fi

mkdir -p "$(dirname "$ENV_DIR")"
if [[ ! -x "$ENV_DIR/bin/python" ]]; then
  echo "[setup_celltypist_env] creating venv $ENV_DIR" >&2
  "$PYTHON" -m venv "$ENV_DIR"
fi
PY="$ENV_DIR/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check --no-input)

"${PIP[@]}" install --upgrade pip setuptools wheel >&2
echo "[setup_celltypist_env] installing ${SPECS[*]}" >&2
"${PIP[@]}" install "${SPECS[@]}" >&2

"$PY" - <<'PYEOF' >&2
import celltypist, sklearn, scanpy  # noqa: E401
print("[setup_celltypist_env] imports ok: celltypist", celltypist.__version__, "scikit-learn", sklearn.__version__)
PYEOF

echo "$SPEC_ID" > "$STAMP"
echo "[setup_celltypist_env] done: $ENV_DIR" >&2
