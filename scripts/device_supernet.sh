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
# Another base (issue 14's VGG family, its base committed under benchmarks/bases/ and copied where the
# method benchmark keeps it, the path its one-shot rows record), in two calls, since its 8 epochs take
# ~15 min on an H200 (2026-12-04: ~110 s an epoch) and one call at most 10:
#   run(command="mkdir -p runs/bench/vgg16_bn_w50-full/base && cp benchmarks/bases/vgg16_bn_w50-fashion-mnist/model.safetensors
#       runs/bench/vgg16_bn_w50-full/base/ && SN_SECONDS=520 RANKING_SECONDS=0 SN_SET='model.name=benchmarks.models:vgg16_bn_w50
#       model.weights=runs/bench/vgg16_bn_w50-full/base/model.safetensors' bash scripts/device_supernet.sh", carry=[".data"],
#       timeout_s=580), then at once (the machine stays warm 30 s) the same command again: it resumes from
#   /tmp/sn. Then here: the two files into benchmarks/bases/vgg16_bn_w50-fashion-mnist/supernet/ and
#   python -m benchmarks.methods --model vgg16_bn_w50 --scale full --supernet that/dir --methods s2dnas_oneshot,...
#   An unfinished one comes back as supernet_checkpoint.safetensors.aa, .ab: `cat` them into DIR and resume here
#   with `s2dnas supernet --out DIR --resume --set <the same SN_SET>`.
set -uo pipefail
OUT=${OUT:?set OUT to the folder whose files come back}
DEVICE=${DEVICE:-cuda}
SN_SET=${SN_SET:-}
RANKING_SECONDS=${RANKING_SECONDS:-330}
SN_SECONDS=${SN_SECONDS:-0}  # > 0: stop the super-network's training after this long (a second call resumes it)
export PYTHONPATH=src:. PYTHONUNBUFFERED=1  # . for benchmarks.models:*
DATA="data.data_dir=$(pwd)/.data"
{
  date; python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null
  start=$(date +%s)
  resume=(); [ -f /tmp/sn/supernet_checkpoint.safetensors ] && resume=(--resume)  # an earlier call's
  limit=(); [ "$SN_SECONDS" -gt 0 ] && limit=(timeout -k 20 "$SN_SECONDS")
  # shellcheck disable=SC2086
  ${limit[@]+"${limit[@]}"} python3 -m s2dnas supernet --out /tmp/sn ${resume[@]+"${resume[@]}"} --no-progress \
      --set device=$DEVICE "$DATA" $SN_SET
  rc=$?
  echo "super-network: rc $rc, $(( $(date +%s) - start )) s wall-clock"
  if [ $rc -ne 0 ]; then  # unfinished: its checkpoint, for a second call (warm machine) or a resume here
    [ -f /tmp/sn/supernet_checkpoint.safetensors ] || { echo "no checkpoint written (killed before its first epoch ended, or an error above)"; exit 1; }
    split -b 15000000 /tmp/sn/supernet_checkpoint.safetensors "$OUT/supernet_checkpoint.safetensors."
    exit 0
  fi
  cp /tmp/sn/supernet.safetensors /tmp/sn/supernet.json "$OUT"/
  # the ranking rewrites its JSON after every architecture: whatever finishes in time comes back
  if [ "$RANKING_SECONDS" -gt 0 ]; then
    timeout "$RANKING_SECONDS" python3 -m benchmarks.supernet_ranking --supernet /tmp/sn --set device=$DEVICE \
        "$DATA" $SN_SET --final-epochs 3 --limit-train 40000 --dir /tmp/ranking --out "$OUT/supernet_ranking.json"
    echo "ranking exit $? after $(( $(date +%s) - start )) s"
  fi
} > "$OUT/log.txt" 2>&1
tail -5 "$OUT/log.txt"
