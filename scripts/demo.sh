#!/usr/bin/env bash
# Sets everything up on a fresh machine, then converts the embedded default model offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/monarch-convert --out out/all-MiniLM-L6-v2-monarch --overwrite "$@"
