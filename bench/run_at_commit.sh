#!/usr/bin/env bash
# Runs one benchmark on an exported copy of a commit (default HEAD), so the numbers belong to that
# commit even while the working tree has uncommitted edits; results land in this tree's bench/results.
#   bash bench/run_at_commit.sh [COMMIT] -- sentiment --n 200
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
commit=HEAD
if [ "${1:-}" != "--" ]; then commit="$1"; shift; fi
[ "${1:-}" = "--" ] && shift
sha=$(git -C "$root" rev-parse "$commit")
src="/tmp/qwen-allinone-src-${sha:0:12}"
if [ ! -d "$src" ]; then
  mkdir -p "$src.tmp" && git -C "$root" archive "$sha" | tar -x -C "$src.tmp" && mv "$src.tmp" "$src"
fi
export BENCH_SOURCE_COMMIT="$sha"
export BENCH_PROMPTS_COMMIT="$(git -C "$root" log -1 --format=%H "$sha" -- pipeline/prompts.py)"
name="$1"; shift
cd "$src" && exec "$root/.venv/bin/python" -m "bench.$name" --out-dir "$root/bench/results" "$@"
