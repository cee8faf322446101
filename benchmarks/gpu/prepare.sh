#!/usr/bin/env bash
# Run HERE (not on the GPU machine): fills the ignored folders that the two device calls carry,
# checks their sizes against the 64 MiB a call may carry, and rehearses the wheel install for
# Python 3.12. Idempotent: finished parts are reused. See benchmarks/gpu/README.md.
#
#   bash benchmarks/gpu/prepare.sh
#
#   .whl/          wheels the device lacks (pydantic + its core, gguf) + peft as here, cp312  call 1
#   .gpu_data/     beauty/ (the two dataset files), tok/{semantic,behavior,dual,behavior_item}/  call 1
#   .gpu_model1/   the first PART1_MIB MiB of SmolLM2-135M-Instruct.Q4_1.gguf              call 1
#   .gpu_model2/   the rest, and the whole file's SHA-256                                 call 2
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
PY=${PY:-$REPO/.venv/bin/python}
DATA=${DATA:-$REPO/../shared/datasets/amazon2014_beauty_p5order}
TOK_CACHE=${TOK_CACHE:-$REPO/benchmarks/.cache/tokenizer_beauty}
# 37: both calls about 58 MiB with the four tokenizer dirs (behavior_item's 12,101-row item
# codebook makes its dir ~4.2 MiB, the other three 1.9-2.7 MiB each)
PART1_MIB=${PART1_MIB:-37}
LIMIT_MIB=${LIMIT_MIB:-60}   # per call, with the tracked tree; the tool's hard limit is 64
GGUF_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
WHEELS=(pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
        typing_extensions==4.16.0 gguf==0.19.0 peft==0.21.2)

echo "== 1. wheels for the device's CPython 3.12 (.whl/)"
mkdir -p .whl
if [ "$(ls .whl/*.whl 2>/dev/null | wc -l)" -ne "${#WHEELS[@]}" ]; then
    rm -f .whl/*.whl
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
fi
# The device's install, rehearsed for cp312 (pip refuses a wheel set that does not fit 3.12).
rehearsal=$(mktemp -d)
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$rehearsal" \
    --python-version 3.12 --implementation cp --only-binary=:all: \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 .whl/*.whl
ls "$rehearsal" | grep -E '^(pydantic|pydantic_core|gguf|annotated_types|typing_inspection|peft)$' | tr '\n' ' '
echo "<- installable for cp312"
rm -rf "$rehearsal"

echo "== 2. dataset files (.gpu_data/beauty/)"
mkdir -p .gpu_data/beauty
for f in Beauty.inter.json Beauty.item_short.json; do
    cmp -s "$DATA/$f" ".gpu_data/beauty/$f" || cp "$DATA/$f" ".gpu_data/beauty/$f"
done

echo "== 3. tokenizer dirs of the four variants (.gpu_data/tok/)"
# benchmarks/tokenizer_beauty.py builds all four from one text embedding and one SASRec
# (deterministic per seed); its result file is left alone (written to a scratch path). A cache
# that lacks one variant (e.g. an older three-variant build) is rebuilt whole.
VARIANTS=(behavior_item semantic behavior dual)
need=0
for v in "${VARIANTS[@]}"; do
    for part in catalog.json trie.npz sid_codebooks.npz; do
        [ -f "$TOK_CACHE/$v/$part" ] || need=1
    done
done
if [ "$need" = 1 ]; then
    "$PY" benchmarks/tokenizer_beauty.py --data "$DATA" --out "$TOK_CACHE" --result "$(mktemp).json"
fi
rm -rf .gpu_data/tok   # only the variants above travel
for v in "${VARIANTS[@]}"; do
    mkdir -p ".gpu_data/tok/$v"
    cp "$TOK_CACHE/$v/"{catalog.json,trie.npz,sid_codebooks.npz,tokenizer_report.json} ".gpu_data/tok/$v/"
    echo "tok/$v $(du -cb ".gpu_data/tok/$v"/* | tail -1 | awk '{ printf "%.1f", $1 / 1048576 }') MiB"
done

echo "== 4. the base model's GGUF in two parts (.gpu_model1/, .gpu_model2/)"
gguf=$("$PY" -c "from training.base_model import smollm2_gguf_path; print(smollm2_gguf_path())")
mkdir -p .gpu_model1 .gpu_model2
sum=$(sha256sum "$gguf" | cut -d' ' -f1)
if ! grep -qs "$sum" .gpu_model2/SHA256SUMS || [ ! -f .gpu_model1/gguf.part1 ] || [ ! -f .gpu_model2/gguf.part2 ] \
        || [ "$(stat -c %s .gpu_model1/gguf.part1)" -ne $((PART1_MIB * 1048576)) ]; then   # split anew at PART1_MIB
    head -c $((PART1_MIB * 1048576)) "$gguf" > .gpu_model1/gguf.part1
    tail -c +$((PART1_MIB * 1048576 + 1)) "$gguf" > .gpu_model2/gguf.part2
    echo "$sum  $GGUF_NAME" > .gpu_model2/SHA256SUMS
fi
(cd .gpu_model1 && sha256sum gguf.part1 > SHA256SUMS)
[ "$(cat .gpu_model1/gguf.part1 .gpu_model2/gguf.part2 | sha256sum | cut -d' ' -f1)" = "$sum" ]
echo "parts join into $GGUF_NAME (sha256 $sum)"

echo "== 5. what each call carries (MiB; tracked tree included)"
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
untracked=$(git ls-files -z --others --exclude-standard | xargs -0 -r du -cb 2>/dev/null | tail -1 | cut -f1)
size() { du -cb "$@" | tail -1 | cut -f1; }
call1=$(( tree + ${untracked:-0} + $(size .whl .gpu_data .gpu_model1) ))
call2=$(( tree + ${untracked:-0} + $(size .gpu_model2) ))
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
echo "tree $(mib "$tree") + untracked $(mib "${untracked:-0}"); .whl $(mib "$(size .whl)"), .gpu_data $(mib "$(size .gpu_data)"), .gpu_model1 $(mib "$(size .gpu_model1)"), .gpu_model2 $(mib "$(size .gpu_model2)")"
echo "call 1 carries $(mib "$call1") MiB, call 2 $(mib "$call2") MiB (limit here $LIMIT_MIB, the tool's 64)"
for c in "$call1" "$call2"; do
    if [ "$c" -gt $((LIMIT_MIB * 1048576)) ]; then
        echo "error: a call is over $LIMIT_MIB MiB: move PART1_MIB or clean untracked files" >&2
        exit 1
    fi
done
echo "ready: see benchmarks/gpu/README.md for the two run calls"
