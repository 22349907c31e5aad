#!/usr/bin/env bash
# Runs all the tests on a fresh machine: makes .venv, installs CPU-only torch and the rest, installs
# Debian's chromium and docker-compose for the browser and compose tests when missing (as root), then ruff and pytest.
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
# Debian packages for tests that skip without them: chromium (the browser test) and Docker Compose's CLI
# (`config` on the compose files; no engine needed). Compose v2 is not packaged for bookworm, whose
# docker-compose is v1 (1.29.2); an installed `docker compose` (v2) is used instead when there is one.
missing=()
command -v chromium >/dev/null 2>&1 || missing+=("chromium:the browser test")
if ! command -v docker-compose >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1; then
  missing+=("docker-compose:the compose test")
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq || true
    for item in "${missing[@]}"; do
      echo "installing Debian's ${item%%:*} for ${item#*:}" >&2
      # docker-compose recommends docker.io, the engine itself: not needed for `config`.
      no_rec=(); [ "${item%%:*}" = docker-compose ] && no_rec=(--no-install-recommends)
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${no_rec[@]}" "${item%%:*}" >/dev/null \
        || echo "could not install ${item%%:*}: ${item#*:} will be skipped" >&2
    done
  else
    for item in "${missing[@]}"; do
      echo "${item%%:*} not found and not root: ${item#*:} will be skipped" >&2
    done
  fi
fi
# The linter first: it is quick, and its rules (pyproject.toml) are part of what the tests check.
"$venv/bin/ruff" check --quiet .
args=("$@")
if [ "${1:-}" = "--slow" ]; then args=(-m slow "${@:2}"); fi
exec "$venv/bin/python" -m pytest "${args[@]}"
