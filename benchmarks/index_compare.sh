#!/usr/bin/env bash
# The Beauty item indices (semantic, behaviour, dual-source, behaviour + item token) trained with
# the same recipe (by default benchmarks/configs/train_beauty_scratch_level.json, the filed
# competition's: the CPU recipe with random ID-token init),
# exported and scored on every validation user; files their validation Recall@10 / NDCG@10 in
# benchmarks/results/tokenizer_beauty.json. The indices are built once, from one SASRec and one
# text embedding (benchmarks/tokenizer_beauty.py), so they differ only in their configs.
#
#   bash benchmarks/index_compare.sh     # RUNS=runs/index_compare; resumable
#   VARIANTS="semantic dual" bash benchmarks/index_compare.sh &   # two variants per invocation,
#   VARIANTS="behavior behavior_item" bash benchmarks/index_compare.sh &   # one thread each
#
# Settings (environment): CONFIG (training config), TRAIN_ARGS (extra `genrec train` options),
# VARIANTS, VALID_USERS (a sample of the validation users; every user by default). The results
# file is written once every variant has its validation report.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benchmarks/env.sh
source benchmarks/env.sh
RUNS=${RUNS:-runs/index_compare}
CONFIG=${CONFIG:-benchmarks/configs/train_beauty_scratch_level.json}
TRAIN_ARGS=${TRAIN_ARGS:-}
VARIANTS=${VARIANTS:-behavior dual semantic behavior_item}
VALID_USERS=${VALID_USERS:-}
ALL_VARIANTS="semantic behavior dual behavior_item"
users_opt=()
[ -n "$VALID_USERS" ] && users_opt=(--max-users "$VALID_USERS")
log() { echo "$(date -u +%FT%TZ) index_compare: $*"; }
# one build of every index; a second invocation waits for the first one's build
lock="$RUNS/indices.building"
mkdir -p "$RUNS"
if [ ! -f "$RUNS/indices/built" ]; then
  if mkdir "$lock" 2> /dev/null; then
    log "building the indices ($ALL_VARIANTS)"
    "$PYTHON" benchmarks/tokenizer_beauty.py --out "$RUNS/indices" --result "$RUNS/indices/tokenizer_beauty.json"
    touch "$RUNS/indices/built"
    rmdir "$lock"
  else
    log "waiting for the index build in $lock"
    while [ ! -f "$RUNS/indices/built" ]; do sleep 10; done
  fi
fi
for v in $VARIANTS; do
  if [ ! -d "$RUNS/train/$v/merged" ]; then
    resume=()
    [ -f "$RUNS/train/$v/checkpoints/last.pt" ] && resume=(--resume)
    log "train $v ($CONFIG $TRAIN_ARGS)"
    # shellcheck disable=SC2086
    "$GENREC" train --data "$DATA" --tokenizer "$RUNS/indices/$v" --out "$RUNS/train/$v" --config "$CONFIG" \
      $TRAIN_ARGS "${resume[@]}"
  fi
  if [ ! -f "$RUNS/artifacts/$v/$v/manifest.json" ]; then
    rm -rf "$RUNS/artifacts/$v/$v"
    "$GENREC" export --run "$RUNS/train/$v" --artifacts "$RUNS/artifacts/$v" --version "$v"
  fi
  if [ ! -f "$RUNS/$v/eval_valid.json" ]; then
    mkdir -p "$RUNS/$v"
    log "evaluate $v on validation"
    "$GENREC" eval --artifacts "$RUNS/artifacts/$v/$v" --data "$DATA" --split valid "${users_opt[@]}" \
      --engine hf --device cpu --out "$RUNS/$v/eval_valid.json" > /dev/null
  fi
done
for v in $ALL_VARIANTS; do
  if [ ! -f "$RUNS/$v/eval_valid.json" ]; then
    log "$v has no validation report yet; the results file waits for it"
    exit 0
  fi
done
"$PYTHON" benchmarks/tokenizer_beauty.py --out "$RUNS/indices" --runs "$RUNS"
