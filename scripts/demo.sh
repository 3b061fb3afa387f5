#!/usr/bin/env bash
# Sets everything up on a fresh machine, then converts the embedded default model offline, and
# loads the result both ways: sentence-transformers alone (softmax, every module) and monarch_convert.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# PYTHONSAFEPATH: the repository root off sys.path, so that its kernels/ folder never shadows
# Hugging Face's kernels package, which transformers imports (README, "Repository layout").
export PYTHONSAFEPATH=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=out/all-MiniLM-L6-v2-monarch
.venv/bin/monarch-convert --out "$OUT" --overwrite "$@"
[ $# -eq 0 ] || exit 0  # other arguments may name another --out or model: nothing more to show
echo
echo "Loading $OUT back:"
.venv/bin/python - "$OUT" <<'PY'
import sys

from sentence_transformers import SentenceTransformer
from transformers.utils import logging

import monarch_convert

logging.disable_progress_bar()
out = sys.argv[1]
text = ["A converted model needs no retraining, yet its sentence embeddings barely move, which is the point of a "
        "zero-shot conversion that keeps the pretrained weights exactly as they were."]
plain = SentenceTransformer(out, device="cpu")
converted = monarch_convert.from_pretrained(out, device="cpu")
modules = ", ".join(type(m).__name__ for m in plain)
cosine = float((plain.encode(text) * converted.encode(text)).sum())
print(f"  SentenceTransformer({out!r}): {modules}, softmax attention (the original model)")
print(f"  monarch_convert.from_pretrained({out!r}): a SentenceTransformer, "
      f"{len(monarch_convert.conversion_report(converted).converted)} attention modules converted")
print(f"  cosine of their embeddings of one sentence: {cosine:.4f}")
PY
