#!/usr/bin/env bash
# LoRA vs full fine-tuning of the tiny model on the demo's synthetic data, with the demo's
# settings (genrec_cli.DemoPlan: 3 epochs, batch 32, lr 3e-3, LoRA r 32 / alpha 64, 16-code
# levels), scored by `genrec eval --split test --engine hf` on every user. Writes
# benchmarks/results/demo_finetune_modes.json. ~15 minutes on 2 cores.
#
#   bash benchmarks/demo_finetune_modes.sh
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
GENREC=${GENREC:-$REPO/.venv/bin/genrec}
WORK=${WORK:-$(mktemp -d /tmp/genrec_demo_modes.XXXXXX)}
cd "$REPO"
"$GENREC" generate-data --out "$WORK/data"
"$GENREC" tokenize --data "$WORK/data" --out "$WORK/tok" --codebook-size 16
for mode in lora full-finetune; do
    "$GENREC" train --data "$WORK/data" --tokenizer "$WORK/tok" --out "$WORK/run-$mode" \
        --base-model tiny --epochs 3 --batch-size 32 --lr 3e-3 --lora-r 32 "--$mode" \
        --objective prompt --prompt-format lines --titles --prompt-align 32
    "$GENREC" export --run "$WORK/run-$mode" --artifacts "$WORK/art-$mode" --version "$mode"
    "$GENREC" eval --artifacts "$WORK/art-$mode/$mode" --data "$WORK/data" --split test \
        --engine hf --out "$WORK/eval-$mode.json"
done
"$REPO/.venv/bin/python" - "$WORK" <<'PY'
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
result = {mode: json.loads((work / f"eval-{mode}.json").read_text())["metrics"] for mode in ("lora", "full-finetune")}
result["users"] = json.loads((work / "eval-lora.json").read_text())["users"]
result["command"] = "bash benchmarks/demo_finetune_modes.sh"
out = Path("benchmarks/results/demo_finetune_modes.json")
out.write_text(json.dumps(result, indent=2) + "\n")
print(out.read_text())
PY
