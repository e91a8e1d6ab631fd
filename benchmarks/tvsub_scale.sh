#!/usr/bin/env bash
# Everything but the long training at TVsub's size (2.15 million pairs), one step after another,
# for BENCHMARKS.md: prepare (time, peak memory, seconds per pass), the first training steps,
# a whole `s2s evaluate`, the shortlist table, CPU decoding speed (1 thread), an ONNX export,
# and the page in a real browser. Run it with nothing else on the machine, on a run that has
# checkpoints and is not training (Ctrl-C or SIGTERM pauses a training; the same command
# resumes it).
# Usage: bash benchmarks/tvsub_scale.sh [CONFIG] [RUN_DIR]
set -euo pipefail
config=${1:-configs/tvsub-zh-en.yaml}
run=${2:-runs/tvsub-zh-en}
scratch=$(mktemp -d /tmp/s2s-scale-XXXX)
trap 'rm -rf "$scratch"' EXIT
timed() { /usr/bin/time -f "  $1: %e s wall, peak resident %M KB" "${@:2}"; }
lscpu | grep 'Model name'

echo "== prepare (a fresh run directory)"
timed prepare s2s prepare "$config" --set run_dir="$scratch/run" 2>&1 | grep -E 'seconds per|wrong|control|duplicate|ratio|prepare:'
echo "== the first 30 training steps"
python3 benchmarks/train_startup.py "$config" --set run_dir="$scratch/run" --steps 30 2>&1 | tail -3
echo "== evaluate, best.pt, beam 5 (decode.precision auto: int8 on a CPU)"
timed evaluate s2s evaluate "$config" --checkpoint best 2>&1 | grep -vE '^\s*$|━|signature' | tail -8
echo "== the shortlist table (counted from the prepared training pairs)"
rm -f "$run/data/shortlist.npz"
python3 - "$run" <<'PY'
import sys, time
from pathlib import Path
from s2s.data.store import load_split
from s2s.data.shortlist_table import build_table
pairs = load_split(Path(sys.argv[1]) / "data", "train")
started = time.perf_counter()
build_table(pairs, (8000, 8000), "timing")
print(f"  shortlist table: {time.perf_counter() - started:.1f} s for {len(pairs):,} pairs")
PY
echo "== CPU decoding, 1 thread, test split"
python3 benchmarks/cpu_translation.py "$run" --beams 1,5 --settings fp32,int8,int8+shortlist --rounds 2 --threads 1 2>&1 | tail -7
echo "== export (ONNX, int8)"
timed export s2s export "$run" --int8 --output "$scratch/export" 2>&1 | tail -2
echo "== the page in chromium"
python3 benchmarks/page_screenshot.py "$run" --output docs/images/page-tvsub.png \
  --line '你今天过得怎么样？' --line '我们明天去看电影吧。' --line '别担心，一切都会好起来的。'
