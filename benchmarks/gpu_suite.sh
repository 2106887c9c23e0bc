#!/usr/bin/env bash
# Issue 19's GPU measurements in one call of the device tool (benchmarks/gpu_suite.py):
#
#   run(command="bash benchmarks/gpu_suite.sh", carry=[".whl"], timeout_s=420)
#
# and, if something is left (skipped, timed out) and the machine is still warm, at once:
#
#   run(command="bash benchmarks/gpu_suite.sh --budget_s 240", carry=[".whl"], timeout_s=280)
#
# .whl/ (ignored through .git/info/exclude) holds the wheels the GPU image lacks
# (ml_collections, tensorboardX); the suite installs them into /tmp when ml_collections is
# missing. Results stay in /tmp/gpu_suite (kept between calls on a warm machine; --resume keeps
# what is ok) and come back in $OUT: gpu_suite.tar.gz (every JSON, logs, the profile, the
# optimised HLO; rewritten after each measurement), summary.md, environment.json,
# nvidia_smi.txt and suite_log.txt. Extra arguments go to the suite (e.g. --only NAME ...).
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?OUT must name the device tool output folder: run this through the device tool}"
nvidia-smi > "$OUT/nvidia_smi.txt" 2>&1
PYTHONUNBUFFERED=1 python3 -m benchmarks.gpu_suite --out /tmp/gpu_suite \
    --archive "$OUT/gpu_suite.tar.gz" --budget_s 380 --resume "$@" 2>&1 | tee "$OUT/suite_log.txt"
status=${PIPESTATUS[0]}
cp /tmp/gpu_suite/summary.md /tmp/gpu_suite/environment.json "$OUT/" 2>/dev/null
exit "$status"
