#!/usr/bin/env bash
# One prepared call for a lent GPU machine (issue 12): the shipped base's super-network at the
# default recipe (8 epochs on all training images), then as much of the ranking evidence as the
# time left allows. Accuracy does not depend on the hardware; GPU timings are labelled as such.
#
# Here, once:   mkdir -p .data && cp /usr/share/datasets/fashion-mnist/*.gz .data/ && echo /.data/ >> .git/info/exclude
# Device tool:  run(command="bash scripts/device_supernet.sh", carry=[".data"], timeout_s=590)
# Back here:    $OUT/supernet.safetensors + supernet.json (ship them after `tests/zoo/test_shipped_supernet.py`
#               passes against them), supernet_ranking.json (partial unless complete=true), log.txt.
# Smoke test on a CPU: OUT=/tmp/o DEVICE=cpu SN_SET="supernet.epochs=1 supernet.limit_train=256" \
#                      RANKING_SECONDS=1 bash scripts/device_supernet.sh
# Another base (issue 14's VGG family; its base is trained by the method benchmark, so carry its weights too):
#   SN_SET="model.name=benchmarks.models:vgg16_bn_w50 model.weights=runs/bench/vgg16_bn_w50-full/base/model.safetensors"
#   RANKING_SECONDS=0, carry=[".data", "runs/bench/vgg16_bn_w50-full/base/model.safetensors"]; then here
#   python -m benchmarks.methods --model vgg16_bn_w50 --scale full --supernet DIR --methods s2dnas_oneshot,...
set -uo pipefail
OUT=${OUT:?set OUT to the folder whose files come back}
DEVICE=${DEVICE:-cuda}
SN_SET=${SN_SET:-}
RANKING_SECONDS=${RANKING_SECONDS:-330}
export PYTHONPATH=src:. PYTHONUNBUFFERED=1  # . for benchmarks.models:*
DATA="data.data_dir=$(pwd)/.data"
{
  date; python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null
  start=$(date +%s)
  # shellcheck disable=SC2086
  python3 -m s2dnas supernet --out /tmp/sn --no-progress --set device=$DEVICE "$DATA" $SN_SET || exit 1
  echo "super-network: $(( $(date +%s) - start )) s wall-clock"
  cp /tmp/sn/supernet.safetensors /tmp/sn/supernet.json "$OUT"/
  # the ranking rewrites its JSON after every architecture: whatever finishes in time comes back
  if [ "$RANKING_SECONDS" -gt 0 ]; then
    timeout "$RANKING_SECONDS" python3 -m benchmarks.supernet_ranking --supernet /tmp/sn --set device=$DEVICE \
        "$DATA" $SN_SET --final-epochs 3 --limit-train 40000 --dir /tmp/ranking --out "$OUT/supernet_ranking.json"
    echo "ranking exit $? after $(( $(date +%s) - start )) s"
  fi
} > "$OUT/log.txt" 2>&1
tail -5 "$OUT/log.txt"
