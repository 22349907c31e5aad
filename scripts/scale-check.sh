#!/usr/bin/env bash
# Proves the scale-out setup (docker-compose.scale.yml) without a Docker engine: Debian's nginx runs
# deploy/nginx.conf (only its upstream addresses and listen port replaced) in front of two demo.py replicas
# on a tiny random model, on loopback. Checks the page, cookie affinity, streaming, /api/infer, /healthz, the
# body limit and a replica SIGKILLed under load, then prints a throughput table in markdown
# (python -m tests.scale_check, which tests/test_scale.py runs too; its docstring lists the checks). Exit status 0 only if every check passed.
#   bash scripts/scale-check.sh                    the tiny model (built once under /var/tmp/qwen-allinone-bench)
#   bash scripts/scale-check.sh --model-dir DIR    real weights; any other tests.scale_check flag (--clients, --rounds, ...)
# Needs root (Debian's nginx keeps its temp folders under /var/lib/nginx); installs nginx with apt-get when
# missing (where services start on install, Debian's package also starts its own nginx on port 80; this
# check runs its own on free loopback ports). Uses .venv's python (from scripts/test.sh; PYTHON=... otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-.venv/bin/python}"
[ -x "$py" ] || { echo "no $py: run bash scripts/test.sh first (it makes .venv), or set PYTHON" >&2; exit 2; }
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's nginx" >&2
    apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
  else
    echo "nginx not found and not root: install nginx (apt-get install nginx) and run this as root" >&2
    exit 2
  fi
fi
args=("$@")
case " $* " in *" --model-dir "*|*" --shape "*) ;; *) args=(--shape tiny "${args[@]}") ;; esac
exec "$py" -m tests.scale_check "${args[@]}"
