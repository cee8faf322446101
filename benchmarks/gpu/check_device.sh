#!/usr/bin/env bash
# Device call 1 of 2 (carry: .gpu_model1 .gpu_data .whl; ~1 min). Leaves the first part of the
# GGUF (when carried: only a SmolLM2 run needs it), the data, the tokenizer dirs and the wheels
# on the machine for call 2, installs the wheels into /tmp/site and checks what call 2 needs:
# imports under Python 3.12, the GPU, the configs, the part's checksum, and (SMOKE=1) the whole
# train -> export -> eval path on the GPU with the recipe call 2 runs
# (benchmarks/configs/train_beauty_gpu.json: the scratch Llama on whole sequences) on the
# behavior_item index (2 steps, validation, 50 eval users; ~30 s).
# Call 2 must follow at once: the machine goes back 30 s after a call ends.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/genrec_out}
PY=${PY:-python3}
SITE=${SITE:-/tmp/site}
DEVICE=${DEVICE:-cuda}
SMOKE=${SMOKE:-1}
mkdir -p "$OUT"
{
    set -e
    date -u +"call 1 at %FT%TZ"
    if [ -f .gpu_model1/gguf.part1 ]; then
        (cd .gpu_model1 && sha256sum -c --quiet SHA256SUMS) && echo "part 1 ok ($(du -m .gpu_model1/gguf.part1 | cut -f1) MiB)"
    else
        echo "no GGUF part 1: fine for the scratch recipe, a SmolLM2 run in call 2 would fail"
    fi
    ls .gpu_data/beauty .gpu_data/tok
    if ! "$PY" -c "import pydantic, gguf" 2>/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
    fi
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    "$PY" - <<'PYEOF'
import sys, torch, transformers, peft, accelerate, pydantic, gguf, tokenizers, safetensors, typer
print(sys.version.split()[0], "torch", torch.__version__, "transformers", transformers.__version__,
      "peft", peft.__version__, "pydantic", pydantic.__version__, "gguf", getattr(gguf, "__version__", "?"))
import training.cli, training.finetune, training.export, training.evaluate, training.validation, model.hf_engine  # noqa
from training.train_config import TrainConfig
import json
for name in ("train_beauty_gpu", "train_beauty"):
    TrainConfig.model_validate(json.load(open(f"benchmarks/configs/{name}.json")))
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
PYEOF
    "$PY" benchmarks/gpu/offline_cli.py eval --help > /dev/null && echo "offline cli ok"
    nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv,noheader || true
    nproc; df -h /tmp . | tail -2
    if [ "$SMOKE" = 1 ]; then
        smoke=${SMOKE_DIR:-/tmp/genrec_smoke}
        rm -rf "$smoke"
        cli=("$PY" benchmarks/gpu/offline_cli.py)
        t0=$(date +%s)
        TQDM_DISABLE=1 "${cli[@]}" train --data .gpu_data/beauty --tokenizer .gpu_data/tok/behavior_item \
            --out "$smoke/run" --config benchmarks/configs/train_beauty_gpu.json \
            --device "$DEVICE" --max-examples 64 --max-steps 2 --batch-size 8 --val-every 1 --val-users 8 \
            --checkpoint-every 1 > "$OUT/smoke_train.log" 2>&1 \
            || { tail -40 "$OUT/smoke_train.log"; exit 1; }
        "${cli[@]}" export --run "$smoke/run" --artifacts "$smoke/artifacts" --version smoke > /dev/null
        TQDM_DISABLE=1 "${cli[@]}" eval --artifacts "$smoke/artifacts/smoke" --data .gpu_data/beauty \
            --engine hf --device "$DEVICE" --max-users 50 --out "$smoke/eval.json" > /dev/null 2>&1 \
            || { echo "smoke eval failed"; exit 1; }
        "$PY" -c "import json; r=json.load(open('$smoke/eval.json')); print('smoke ok:', r['users'], 'users', r['extra'], r['wall_s'], 's')"
        echo "smoke train + export + eval in $(( $(date +%s) - t0 )) s"
    fi
    echo "call 1 done: run call 2 now"
} 2>&1 | tee "$OUT/call1.log"
exit "${PIPESTATUS[0]}"
