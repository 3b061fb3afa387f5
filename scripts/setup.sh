#!/usr/bin/env bash
# Creates .venv (once) and installs monarch-convert with every extra, offline-capable from PyPI.
# torch 2.13.0 goes first: it is a CPU build on these machines' local disk, and installing it
# first stops any later requirement from pulling a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[default-model,sentence-transformers,eval,heal,test]"
