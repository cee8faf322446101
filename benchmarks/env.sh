# Sourced by the benchmark scripts: offline model loading and the tools they run (override any
# of them from the environment).
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
GENREC=${GENREC:-.venv/bin/genrec}
PYTHON=${PYTHON:-.venv/bin/python}
DATA=${DATA:-../shared/datasets/amazon2014_beauty_p5order}
