#!/usr/bin/env bash
# Every GPU measurement (benchmarks/gpu_suite.py) on this machine's GPU, with a record of the
# machine, from the repository root:
#
#   bash benchmarks/gpu_suite.sh                      # everything
#   bash benchmarks/gpu_suite.sh --budget_s 600       # at most 10 minutes; rerun to finish
#   OUT=/data/suite bash benchmarks/gpu_suite.sh --only gan_mnist_paper_bf16_b256 matmul_bf16
#
# The measurements go to /tmp/gpu_suite; running the script again keeps those with a result
# (--resume) and runs the rest. The folder $OUT (default /tmp/gpu_suite_results) receives
# gpu_suite.tar.gz (every JSON, the logs, the profile and the optimised HLO; rewritten after each
# measurement, so a stopped run still leaves what finished), summary.md, environment.json,
# nvidia_smi.txt and suite_log.txt. Extra arguments go to the suite (--only NAME ...,
# --budget_s SECONDS, --timeout_s SECONDS; see python -m benchmarks.gpu_suite --help).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu_suite_results}"
mkdir -p "$OUT" || exit 1
nvidia-smi > "$OUT/nvidia_smi.txt" 2>&1
PYTHONUNBUFFERED=1 python3 -m benchmarks.gpu_suite --out /tmp/gpu_suite \
    --archive "$OUT/gpu_suite.tar.gz" --resume "$@" 2>&1 | tee "$OUT/suite_log.txt"
status=${PIPESTATUS[0]}
cp /tmp/gpu_suite/summary.md /tmp/gpu_suite/environment.json "$OUT/" 2>/dev/null
exit "$status"
