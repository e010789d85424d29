#!/usr/bin/env bash
# GPU acceptance in one command (about 8 minutes on one GPU): the test suite on the device, CPU/device agreement of
# every pipeline (every model and op) on real frames, and the throughput table at 720p and 1080p with batch sizes
# 8/32/128, into gpu_acceptance/acceptance.{json,md}. Paste acceptance.md into the issue. Exits 1 when a test fails
# on the device or a pipeline exceeds its agreement tolerances or host-sync ceilings (benchmarks/gpu_acceptance.py).
#
#   bash benchmarks/gpu_acceptance.sh                 # on a GPU machine (device cuda)
#   bash benchmarks/gpu_acceptance.sh --device cpu --small   # the same code on a CPU, small sizes (CI)
set -euo pipefail
DEVICE=cuda
SMALL=0
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --small) SMALL=1; shift ;;
    *) echo "usage: $0 [--device DEV] [--small]" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
OUT=gpu_acceptance
mkdir -p "$OUT"
if [ "$SMALL" = 1 ]; then
  TESTS=(tests/test_jobs.py tests/test_fake_cuda.py -k "composed or out_of_memory or fake")
  ARGS=(--frames 8 --throughput-frames 8 --batch-sizes 8 --heights 720 --only "decode only" "anonymize default")
else
  TESTS=(tests)
  ARGS=(--only "decode only" "detect centerface" "landmarks + blendshapes" "anonymize default"
        "manipulate blur (face oval)" "landmarks+manipulate+analyse, one pass")
fi
# the verdict: non-zero when a test fails on the device or a pipeline exceeds its tolerances or sync ceilings
set +e
python -m pytest -q -p no:cacheprovider --device "$DEVICE" "${TESTS[@]}" > "$OUT/tests.log" 2>&1
TESTS_RC=$?
tail -3 "$OUT/tests.log"
python benchmarks/gpu_acceptance.py --device "$DEVICE" --out "$OUT" "${ARGS[@]}"
AGREE_RC=$?
set -e
if [ "$TESTS_RC" != 0 ] || [ "$AGREE_RC" != 0 ]; then
  echo "gpu acceptance: FAIL (tests rc $TESTS_RC, agreement rc $AGREE_RC; see $OUT/tests.log)" >&2
  exit 1
fi
