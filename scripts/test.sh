#!/usr/bin/env bash
# Sets everything up on a fresh machine, then runs the whole test suite offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# PYTHONSAFEPATH: the repository root off sys.path, so that its kernels/ folder never shadows
# Hugging Face's kernels package, which transformers imports (README, "Repository layout").
export PYTHONSAFEPATH=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -n 2 --durations=15 "$@"
