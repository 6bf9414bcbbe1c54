#!/usr/bin/env bash
# Run the foundation benchmarks one after another (never two at once: they share 2 cores).
# Each prints a table and writes bench/results/<name>.json; bench/README.md holds the tables.
# Takes about 15 minutes on 2 CPU cores; needs ~7 GB of free memory (the 1M-vector index).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
PY=.venv/bin/python

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)  (figures are only comparable on a quiet machine)"
$PY bench/bench_indexing.py      # pipeline vs naive loop vs model-only ceiling, peak RSS
$PY bench/bench_vector_index.py       # latency / recall at 10k, 100k, 1M vectors, index RSS
