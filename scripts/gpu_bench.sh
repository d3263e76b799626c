#!/usr/bin/env bash
# The whole GPU measurement of docs/benchmarks.md in one go (well under 5 minutes on one H100/H200):
# forwards of LLaDA-8B (bf16, random weights) at batch 1 and 8 with a 1k-token cached prefix, the
# same for LLaDA2.0-mini with its 256 experts, each against its measured ceiling and the
# weight-streaming floor; whole generations eager and with block steps replayed as CUDA graphs
# (--graphs, sampling/graphs.py); tables to stdout, JSON files to $OUT (default gpu_out/).
#
#   bash scripts/gpu_bench.sh                         # on the GPU machine, from the repository root
#   DEVICE=cpu DTYPE=float32 SHAPES="llada-tiny llada2-tiny" PROMPT=256 bash scripts/gpu_bench.sh  # CPU dry run
#
# The GPU machine may have no network: nothing is installed from a registry. The package runs from
# the source tree (PYTHONPATH), with that machine's own torch; wheels of anything missing can be
# carried in .whl/ and are installed from there without an index.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
OUT="${OUT:-gpu_out}"
DEVICE="${DEVICE:-cuda}"
DTYPE="${DTYPE:-bfloat16}"
SHAPES="${SHAPES:-llada-8b llada2-mini}"
PROMPT="${PROMPT:-1024}"  # tokens of the cached prefix
mkdir -p "$OUT"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/gpu.txt"
for shape in $SHAPES; do
    echo "## $shape"
    python3 -m omnidlm bench --shape "$shape" --random-weights --device "$DEVICE" --dtype "$DTYPE" \
        --batch-sizes 1,8 --prompt-length "$PROMPT" --gen-length 256 --block-length 32 --repeats 10 --graphs \
        --json "$OUT/$shape.json"
done
