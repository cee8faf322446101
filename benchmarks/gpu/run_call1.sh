#!/usr/bin/env bash
# Device call 1 of 2 (carry: .gpu_model1 .gpu_data .whl; ~20 s). Leaves the first half of the
# GGUF, the data, the tokenizer dirs and the wheels on the machine for call 2, installs the
# wheels into /tmp/site and checks what call 2 needs: imports under Python 3.12, the GPU, the
# part's checksum. Call 2 must follow at once: the machine goes back 30 s after a call ends.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/genrec_out}
PY=${PY:-python3}
SITE=${SITE:-/tmp/site}
mkdir -p "$OUT"
{
    set -e
    date -u +"call 1 at %FT%TZ"
    (cd .gpu_model1 && sha256sum -c --quiet SHA256SUMS) && echo "part 1 ok ($(du -m .gpu_model1/gguf.part1 | cut -f1) MiB)"
    ls .gpu_data/beauty .gpu_data/tok
    if ! "$PY" -c "import pydantic, gguf" 2>/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
    fi
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    "$PY" - <<'PYEOF'
import sys, torch, transformers, peft, accelerate, pydantic, gguf, tokenizers, safetensors, typer
print(sys.version.split()[0], "torch", torch.__version__, "transformers", transformers.__version__,
      "peft", peft.__version__, "pydantic", pydantic.__version__, "gguf", getattr(gguf, "__version__", "?"))
import training.cli, training.finetune, training.export, training.evaluate, model.hf_engine  # noqa
from training.finetune import TrainConfig
import json
TrainConfig.model_validate(json.load(open("benchmarks/configs/train_beauty.json")))
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
PYEOF
    "$PY" benchmarks/gpu/offline_cli.py eval --help > /dev/null && echo "offline cli ok"
    nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv,noheader || true
    nproc; df -h /tmp . | tail -2
    echo "call 1 done: run call 2 now"
} 2>&1 | tee "$OUT/call1.log"
exit "${PIPESTATUS[0]}"
