#!/usr/bin/env bash
# The three Beauty item indices (semantic, behaviour, dual-source) trained with the same recipe
# and a short budget (benchmarks/configs/train_beauty_scratch_compare.json: the scratch Llama,
# whole sequences, 5 epochs), exported and scored on the same validation users; files their
# validation Recall@10 / NDCG@10 in benchmarks/results/tokenizer_beauty.json.
#
#   bash benchmarks/index_compare.sh     # RUNS=runs/index_compare; ~35 minutes on 2 cores; resumable
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benchmarks/env.sh
source benchmarks/env.sh
RUNS=${RUNS:-runs/index_compare}
CONFIG=${CONFIG:-benchmarks/configs/train_beauty_scratch_compare.json}
VALID_USERS=${VALID_USERS:-2000}
for v in behavior dual semantic; do
  if [ ! -f "$RUNS/indices/$v/catalog.json" ]; then
    "$GENREC" tokenize --data "$DATA" --config "benchmarks/configs/tokenizer_$v.json" --out "$RUNS/indices/$v" > /dev/null
  fi
  if [ ! -d "$RUNS/train/$v/merged" ]; then
    "$GENREC" train --data "$DATA" --tokenizer "$RUNS/indices/$v" --out "$RUNS/train/$v" --config "$CONFIG"
  fi
  if [ ! -f "$RUNS/artifacts/$v/$v/manifest.json" ]; then
    "$GENREC" export --run "$RUNS/train/$v" --artifacts "$RUNS/artifacts/$v" --version "$v"
  fi
  if [ ! -f "$RUNS/$v/eval_valid.json" ]; then
    mkdir -p "$RUNS/$v"
    "$GENREC" eval --artifacts "$RUNS/artifacts/$v/$v" --data "$DATA" --split valid --max-users "$VALID_USERS" \
      --engine hf --device cpu --out "$RUNS/$v/eval_valid.json" > /dev/null
  fi
done
"$PYTHON" benchmarks/tokenizer_beauty.py --out "$RUNS/indices" --runs "$RUNS"
