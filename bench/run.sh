#!/usr/bin/env bash
# The benchmark: vidfs vs curl (the limit) vs rclone mount vs httpdirfs, over nginx at given RTTs.
# Usage: sudo bench/run.sh [--runs 3] [--rtt-ms 20,0] [--quick] [--peers vidfs,curl,...]   (see bench/run.py)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${VIDFS_PYTHON:-$repo/.venv/bin/python}"
if [ ! -x "$python" ]; then
  echo "bench: $python not found; set up the venv first: python3 -m venv .venv && .venv/bin/pip install -e '.[test]'" >&2
  exit 2
fi
if [ "$(id -u)" -ne 0 ]; then
  exec sudo --preserve-env=VIDFS_PYTHON,XDG_CACHE_HOME "$0" "$@"
fi
# The chart needs matplotlib (the `bench` extra): install it into the venv once, unless told not to.
case " $* " in
  *" --no-install "* | *" --no-chart "*) ;;
  *)
    if ! "$python" -c "import matplotlib" 2>/dev/null; then
      echo "bench: installing matplotlib into the venv (the bench extra) …" >&2
      "$python" -m pip install -q "matplotlib>=3.6" >&2 || echo "bench: no matplotlib: no chart" >&2
    fi
    ;;
esac
# vidfs is measured as an installed package runs: its bytecode compiled once, here. Where
# PYTHONDONTWRITEBYTECODE is set (as on these machines) nothing is cached otherwise, and every mount the
# bench starts compiled vidfs from source: 0.56 s to import what a mount imports, against 0.31 s (a
# remount's time to its first complete walk counts that start). Files whose source is newer are compiled
# again; an unwritable tree is left as it is (Python then compiles in memory, as before).
"$python" -m compileall -q "$repo/vidfs" "$repo/bench" >/dev/null 2>&1 || echo "bench: vidfs's bytecode could not be written: every mount compiles it" >&2
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" -m bench.run "$@"
