#!/usr/bin/env bash
# The benchmark: vidfs vs curl (the limit) vs rclone mount vs httpdirfs, over nginx at a given RTT.
# Usage: sudo bench/run.sh [--runs 3] [--rtt-ms 20] [--quick] [--peers vidfs,curl,...]   (see bench/run.py)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${VIDFS_PYTHON:-$repo/.venv/bin/python}"
if [ ! -x "$python" ]; then
  echo "bench: $python not found; set up the venv first: python3 -m venv .venv && .venv/bin/pip install -e '.[test]'" >&2
  exit 2
fi
if [ "$(id -u)" -ne 0 ]; then
  exec sudo --preserve-env=VIDFS_PYTHON,XDG_CACHE_HOME "$python" "$repo/bench/run.py" "$@"
fi
exec "$python" "$repo/bench/run.py" "$@"
