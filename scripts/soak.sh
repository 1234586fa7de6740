#!/bin/sh
# Load and soak benchmarks of the whole service (DESIGN.md bench scenarios `load` and `soak`), one after
# the other in the background so they don't compete for the CPU. Results are JSON, progress goes to logs.
#
#   scripts/soak.sh [MINUTES] [OUT_DIR]     defaults: 30 minutes, /tmp/livebot-bench
#
# load: 10 rooms × 300 comments/s for 60 s (throughput, p50/p99 event→RoomState, RSS, stored-event loss)
# soak: 3 rooms × 100 comments/s for MINUTES (RSS sampled every 10 s, drift after the warm-up)
set -eu
MINUTES=${1:-30}
OUT=${2:-/tmp/livebot-bench}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LIVEBOT=${LIVEBOT:-$ROOT/.venv/bin/livebot}
mkdir -p "$OUT"
nohup sh -c "\"$LIVEBOT\" bench --scenario load --json >\"$OUT/load.json\" 2>\"$OUT/load.log\" &&
  \"$LIVEBOT\" bench --scenario soak --minutes \"$MINUTES\" --json >\"$OUT/soak.json\" 2>\"$OUT/soak.log\"" \
  >/dev/null 2>&1 &
echo "load, then soak for $MINUTES min: running in the background (pid $!)"
echo "results: $OUT/load.json $OUT/soak.json   progress: tail -f $OUT/soak.log"
