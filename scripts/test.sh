#!/usr/bin/env bash
# Runs all the tests on a fresh machine: makes .venv, installs CPU-only torch and the rest, installs
# Debian's chromium for the browser test when missing (as root), then pytest.
#   bash scripts/test.sh              the default suite (fast; slow tests skipped)
#   bash scripts/test.sh --slow       only the slow load / long-session tests
#   bash scripts/test.sh ARGS...      any other pytest arguments (e.g. -k chat)
# REAL_MODEL_DIR=DIR adds the tests that need real weights (see ../shared/tools/get-real-model).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${VENV:-.venv}"
py="${PYTHON:-python3}"
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
stamp="$venv/.installed-$(cat requirements.txt requirements-dev.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  # CPU-only torch: the +cpu build where a local wheel or index already offers it, else PyTorch's CPU
  # wheel index. Plain `pip install torch` would pull the multi-GB CUDA build.
  torch_pin=$(grep -E '^torch==' requirements.txt)
  "${pip[@]}" install -q "${torch_pin}+cpu" 2>/dev/null \
    || "${pip[@]}" install -q "$torch_pin" --index-url "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
  "${pip[@]}" install -q -r requirements-dev.txt
  touch "$stamp"
fi
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium for the browser test" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "could not install chromium: the browser test will be skipped" >&2
  else
    echo "chromium not found and not root: the browser test will be skipped" >&2
  fi
fi
args=("$@")
if [ "${1:-}" = "--slow" ]; then args=(-m slow "${@:2}"); fi
exec "$venv/bin/python" -m pytest "${args[@]}"
