#!/usr/bin/env bash
# The Beauty recipe from scratch on this machine's CPU: tokenize, train, export, evaluate, file.
#
#   bash benchmarks/beauty_cpu.sh            # RUNS=runs/beauty_cpu, resumable: run it again after a stop
#
# Every step leaves its output under $RUNS and is skipped when that output exists; training
# resumes from its last checkpoint. The last step writes the `genrec` entry of
# benchmarks/results/beauty.json (test on every user, validation on every user) with the wall
# times. Settings (environment): INDEX (tokenizer config under benchmarks/configs, default
# behavior_item: one behavioural level + a token per item), TRAIN_CONFIG (default
# train_beauty_cpu.json: the scratch Llama with the per-level softmax, ID tokens started along
# their codebook vectors), TRAIN_ARGS (extra `genrec train` options), EVAL_ROWS, EVAL_BATCH,
# MAX_USERS (a sample, for a rehearsal; the committed figures use every user), UNTIL=valid
# (stop after the validation evaluation: compare runs there, then run again without UNTIL on
# the chosen one to evaluate test once and file it).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benchmarks/env.sh
source benchmarks/env.sh
RUNS=${RUNS:-runs/beauty_cpu}
INDEX=${INDEX:-behavior_item}
TRAIN_CONFIG=${TRAIN_CONFIG:-benchmarks/configs/train_beauty_cpu.json}
TRAIN_ARGS=${TRAIN_ARGS:-}
EVAL_ROWS=${EVAL_ROWS:-64}
EVAL_BATCH=${EVAL_BATCH:-64}
MAX_USERS=${MAX_USERS:-}
UNTIL=${UNTIL:-}
OUT=${OUT:-benchmarks/results/beauty.json}
mkdir -p "$RUNS"
log() { echo "$(date -u +%FT%TZ) beauty_cpu: $*" | tee -a "$RUNS/progress.log"; }
# wall seconds of each step, kept across resumed invocations
timed() {
  local name=$1; shift
  local start=$SECONDS
  "$@"
  echo "$name $((SECONDS - start))" >> "$RUNS/times.txt"
}
users_opt=()
[ -n "$MAX_USERS" ] && users_opt=(--max-users "$MAX_USERS")

if [ ! -f "$RUNS/tok/catalog.json" ]; then
  log "tokenize ($INDEX index)"
  timed tokenize "$GENREC" tokenize --data "$DATA" --config "benchmarks/configs/tokenizer_$INDEX.json" \
    --out "$RUNS/tok" > "$RUNS/tokenize.json"
fi
if [ ! -d "$RUNS/run/merged" ]; then
  resume=()
  [ -f "$RUNS/run/checkpoints/last.pt" ] && resume=(--resume) && log "resuming training"
  log "train ($TRAIN_CONFIG $TRAIN_ARGS)"
  # shellcheck disable=SC2086
  timed train "$GENREC" train --data "$DATA" --tokenizer "$RUNS/tok" --out "$RUNS/run" \
    --config "$TRAIN_CONFIG" $TRAIN_ARGS "${resume[@]}"
fi
if [ ! -f "$RUNS/artifacts/beauty-cpu/manifest.json" ]; then
  log "export"
  rm -rf "$RUNS/artifacts/beauty-cpu"
  timed export "$GENREC" export --run "$RUNS/run" --artifacts "$RUNS/artifacts" --version beauty-cpu
fi
for split in valid test; do
  if [ ! -f "$RUNS/eval_$split.json" ]; then
    log "evaluate $split"
    timed "eval_$split" "$GENREC" eval --artifacts "$RUNS/artifacts/beauty-cpu" --data "$DATA" --split "$split" \
      --engine hf --device cpu --rows "$EVAL_ROWS" --batch-size "$EVAL_BATCH" "${users_opt[@]}" \
      --out "$RUNS/eval_$split.json" > /dev/null
  fi
  if [ "$UNTIL" = "$split" ]; then
    log "stopping after the $split evaluation (UNTIL=$UNTIL)"
    exit 0
  fi
done
log "filing the genrec entry in $OUT"
"$PYTHON" benchmarks/beauty_results.py --update --out "$OUT" \
  --genrec-valid "$RUNS/eval_valid.json" --genrec-test "$RUNS/eval_test.json" \
  --genrec-run "$RUNS" --genrec-command "INDEX=$INDEX TRAIN_CONFIG=$TRAIN_CONFIG TRAIN_ARGS='$TRAIN_ARGS' bash benchmarks/beauty_cpu.sh"
log "done"
