#!/usr/bin/env bash
# GPU check (issue 8): one table of training/prediction speed, time to the forest's IoU and a real
# out-of-memory recovery. Run from anywhere; uses the machine's python3 (no install needed).
#   bash benchmarks/gpu_check.sh                      # the GPU machine, < 6 min
#   bash benchmarks/gpu_check.sh --device cpu --quick # smoke run on a CPU, < 1 min
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"
