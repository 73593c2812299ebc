#!/usr/bin/env bash
# One prepared call for a lent GPU machine (issue 14): train rows of the VGG committed-base
# comparison that cost the most CPU hours (benchmarks.methods --no-speed: nothing is timed there),
# in the order given, until a deadline; then hand back as many rows as one call may return. The
# timing runs here afterwards, on the CPU every other row was timed on (benchmarks.methods without
# --no-speed rebuilds each cached row from its files and times it). Accuracy does not depend on the
# hardware; the build times these rows record are GPU times (or GPU + CPU for a row finished
# here), and are labelled so.
#
# Here, once:   mkdir -p .data && cp /usr/share/datasets/fashion-mnist/*.gz .data/   (.data/ is git-ignored)
# Device tool:  run(command='bash scripts/device_vgg_rows.sh train "--methods static_base,s2dnas_handpicked" \
#                   "--seeds 2 --methods static_base,s2dnas_random"', carry=[".data"], timeout_s=...)
#               (TRAIN_SECONDS: the deadline, default 480; each argument is one benchmarks.methods call;
#               give timeout_s >= TRAIN_SECONDS + 90 for the packing). Finished rows go into $OUT as they
#               finish (what is there comes back even when the call times out); then, at once while the
#               machine is warm (30 s), run(command="bash scripts/device_vgg_rows.sh deliver") until its
#               output says "nothing left". A second `train` call on the same warm machine resumes the rows
#               the first one left unfinished (runs/ in the /tmp copy is kept).
# Back here:    copy every call's files into one folder F, then, in the repo root:
#               bash scripts/device_vgg_rows.sh unpack F
#               (restores runs/bench/vgg16_bn_w50-full/<row>/: a finished row's cache, or an unfinished
#               one's checkpoint.pt, which the next benchmarks.methods run here resumes), then time them:
#               python -m benchmarks.methods --scale full --model vgg16_bn_w50 --out runs/bench/vgg16_bn_w50-full
#               --methods static_base,<rows> --result runs/<name>.json
#
# Learnt on the first call (session 30, 2026-12-04): every call re-sends the working tree and
# removes what the last call wrote into its tracked or untracked-but-not-ignored paths (the
# super-network written under benchmarks/bases/ went that way); the work happens in a copy under /tmp, which lives
# as long as the machine is held. One 16-epoch final training of a VGG row takes ~3.2 min on the
# H200 (12 s an epoch, 21 ms a step; ~130 s an epoch on the 2-core CPU here); the super-network takes ~110 s an
# epoch there (256 ms a step: four architectures whose shared layers slice their weights at every
# pass, most likely launch-bound; inferred from a CPU profile), so its 8 epochs take two calls: scripts/device_supernet.sh (SN_SECONDS).
set -uo pipefail
MODE=${1:-train}
BENCH=runs/bench/vgg16_bn_w50-full
WORK=/tmp/repo
PACK=/tmp/pack
LOG=/tmp/device_vgg_rows.log

if [ "$MODE" = unpack ]; then  # here, in the repo root: F holds NN-row.tgz.aa, .ab, ... pieces
  src=${2:?usage: device_vgg_rows.sh unpack FOLDER}
  for first in "$src"/*.tgz.aa; do
    [ -e "$first" ] || continue
    cat "${first%.aa}".* | tar -xzf - && echo "unpacked $(basename "${first%.tgz.aa}")"
  done
  exit 0
fi

deliver() {  # move the next pieces into $OUT, up to 6 files and 62 MB there in all; beside them log.txt
             # (the log so far) and, during a train call, train-log.txt (the same, written as it grows)
  OUT=${OUT:?set OUT to the folder whose files come back}
  mkdir -p "$PACK/sent"
  local n bytes f size left
  n=$(ls "$OUT" | grep -c '\.tgz\.')
  bytes=$(cat "$OUT"/*.tgz.* 2>/dev/null | wc -c)
  for f in $(ls "$PACK" | grep '\.tgz\.' | sort); do
    size=$(stat -c %s "$PACK/$f")
    if [ $n -ge 6 ] || [ $((bytes + size)) -gt 62000000 ]; then break; fi
    cp "$PACK/$f" "$OUT/" && mv "$PACK/$f" "$PACK/sent/" && n=$((n + 1)) && bytes=$((bytes + size))
  done
  cp "$LOG" "$OUT/log.txt" 2>/dev/null
  left=$(ls "$PACK" | grep -c '\.tgz\.')
  echo "delivered $n pieces ($bytes bytes): $(ls "$OUT" | tr '\n' ' ')"
  if [ "$left" -eq 0 ]; then echo "nothing left"; else echo "$left pieces left: call deliver again"; fi
}

if [ "$MODE" = deliver ]; then deliver; exit 0; fi
[ "$MODE" = train ] || { echo "usage: device_vgg_rows.sh train ARGS... | deliver | unpack FOLDER" >&2; exit 2; }
shift

# -- train (on the device) ------------------------------------------------------------------------
OUT=${OUT:?set OUT to the folder whose files come back}
START=$(date +%s)
STAMP=$(date +%m%d%H%M)  # in the piece names: pieces of two calls never mix in one folder here
DEADLINE=$((START + ${TRAIN_SECONDS:-480}))
export PYTHONPATH=src:. PYTHONUNBUFFERED=1
rm -rf "$PACK" && mkdir -p "$PACK" /usr/share/datasets/fashion-mnist && cp .data/*.gz /usr/share/datasets/fashion-mnist/ || exit 1
# the code afresh, runs/ (an earlier call's rows and checkpoints) kept
mkdir -p "$WORK" && rm -rf "$WORK/src" "$WORK/benchmarks" && cp -r src benchmarks "$WORK"/ && cd "$WORK" || exit 1
ORDER=10

pack() {  # a row's folder, once: finished (result.json) without its checkpoints, else all of it
  local dir=$1 tag exclude=(--exclude=export)
  tag=$(basename "$dir")
  [ -e "$PACK/done-$tag" ] && return
  [ -f "$dir/result.json" ] && exclude+=(--exclude=checkpoint.pt --exclude=controller.pt)
  tar -czf "$PACK/tmp.tgz" "${exclude[@]}" "$dir" || return
  split -b 15000000 "$PACK/tmp.tgz" "$PACK/$ORDER-$tag-$STAMP.tgz." && rm "$PACK/tmp.tgz"
  touch "$PACK/done-$tag"; ORDER=$((ORDER + 1))
  echo "packed $tag ($(du -sh "$dir" | cut -f1) raw$([ -f "$dir/result.json" ] || echo ', unfinished'))"
}

pack_rows() {  # every finished row; with `all`, the unfinished ones too
  local d
  for d in "$BENCH"/*/; do
    d=${d%/}
    case $(basename "$d") in base|static_base) continue ;; esac
    if [ -f "$d/result.json" ] || [ "${1:-}" = all ]; then pack "$d"; fi
  done
}

{
  date; python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null
  for args in "$@"; do
    left=$((DEADLINE - $(date +%s)))
    if [ $left -lt 45 ]; then echo "skipped (deadline): $args"; continue; fi
    echo "--- $(date -Is) methods $args (${left}s left)"
    # shellcheck disable=SC2086
    timeout -k 20 $left python3 -m benchmarks.methods --scale full --model vgg16_bn_w50 --out "$BENCH" --no-speed \
        --result /tmp/r.json $args
    echo "--- rc $? after $(( $(date +%s) - START )) s"
    pack_rows
    deliver  # what is finished comes back even if the call is cut short
  done
  pack_rows all
  echo "=== training done after $(( $(date +%s) - START )) s"
} 2>&1 | tee "$LOG" > "$OUT/train-log.txt"
deliver
tail -25 "$LOG"
