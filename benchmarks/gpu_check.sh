#!/usr/bin/env bash
# The GPU check, in one call sized for about 10 minutes on an H100/H200:
#   1. the engine and model test suite on cuda (CuPy);
#   2. the training step against PyTorch CUDA eager (float32, manual attention and SDPA),
#      TF32 off on both sides, then on on both sides;
#   3. nanoGPT's GPU recipe on tiny Shakespeare, for as many iterations as fit.
# Usage: bash benchmarks/gpu_check.sh PATH/TO/tinyshakespeare.txt [OUT_DIR]
# Everything it measures is written under OUT_DIR (default: $OUT, else ./gpu_out).
set -u
DATA=${1:?usage: gpu_check.sh PATH/TO/tinyshakespeare.txt [OUT_DIR]}
OUT_DIR=${2:-${OUT:-gpu_out}}
RECIPE_SECONDS=${RECIPE_SECONDS:-300}
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  $PY -c "import numpy, cupy, torch; print('numpy', numpy.__version__, 'cupy', cupy.__version__, 'torch', torch.__version__)" 2>&1
} > "$OUT_DIR/machine.txt"
cat "$OUT_DIR/machine.txt"

echo "== 1. test suite on cuda"
timeout 150 $PY -m pytest -q -x --device=cuda -p no:cacheprovider > "$OUT_DIR/tests_cuda.txt" 2>&1
echo "pytest exit $?" >> "$OUT_DIR/tests_cuda.txt"
tail -3 "$OUT_DIR/tests_cuda.txt"

echo "== 2. training step vs PyTorch CUDA eager"
for tf32 in False True; do
  timeout 60 $PY benchmarks/bench_train.py --config=gpu --device=cuda --tf32=$tf32 \
    --steps=10 --repeats=5 > "$OUT_DIR/bench_train_tf32_$tf32.txt" 2>&1
  cat "$OUT_DIR/bench_train_tf32_$tf32.txt"
done

echo "== 3. nanoGPT's GPU recipe (stopped after ${RECIPE_SECONDS}s if unfinished)"
timeout "$RECIPE_SECONDS" $PY -m tinygrad_gpt train --data="$DATA" --out_dir="$OUT_DIR/recipe" \
  --device=cuda --batch_size=64 --block_size=256 --n_layer=6 --n_head=6 --n_embd=384 \
  --dropout=0.2 --learning_rate=1e-3 --min_lr=1e-4 --max_iters=5000 --lr_decay_iters=5000 \
  --warmup_iters=100 --beta2=0.99 --eval_interval=250 --eval_iters=200 --log_interval=100 \
  --progress=False --always_save_checkpoint=False > "$OUT_DIR/recipe.txt" 2>&1
echo "recipe exit $? (124 means it ran out of time; log.jsonl holds the curve)" >> "$OUT_DIR/recipe.txt"
grep -E "^step|exit" "$OUT_DIR/recipe.txt"
rm -f "$OUT_DIR/recipe/ckpt.safetensors"   # keep the figures, not the weights
