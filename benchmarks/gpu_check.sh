#!/usr/bin/env bash
# The GPU check, in one call of at most 9 minutes (each part has its own time limit):
#   1. the test suite on cuda (CuPy), failures listed, a junit file;
#   2. the training step against PyTorch CUDA eager at nanoGPT's GPU config, float32:
#      TF32 off on both sides, then on on both (CUPY_TF32=1 for CuPy, allow_tf32 for torch);
#   3. nanoGPT's GPU recipe on tiny Shakespeare for about 4 minutes, with its loss curve.
# Then a summary. Output is unbuffered and written to OUT_DIR as it goes, so a part cut off
# by its time limit still leaves what it printed.
#
# Usage: bash benchmarks/gpu_check.sh [--dry-run] [OUT_DIR]
#   OUT_DIR defaults to $OUT, else ./gpu_out. The recipe reads benchmarks/data/tinyshakespeare.txt
#   (an ignored path: bring it along with the repository), else $DATA, else falls back to the
#   pydoc dataset, which ships with Python.
#   --dry-run runs the same flow on the CuPy stand-in (tests/fakecupy) on the CPU, with tiny
#   sizes and short limits, and torch on the CPU: it checks the flow, it measures nothing.
set -u
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
OUT_DIR=${1:-${OUT:-gpu_out}}
mkdir -p "$OUT_DIR"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
START=$(date +%s)

if [ $DRY = 1 ]; then
  export TINYGRAD_GPT_FAKE_CUPY=1 PYTHONPATH="$ROOT/tests/fakecupy:$PYTHONPATH"
  T_TESTS=60; T_BENCH=60; T_RECIPE=45
  TESTS=(tests/test_cuda_path.py tests/test_train.py -k "cuda_path or resume_matches")
  BENCH=(--config=tiny --torch_device=cpu --steps=2 --repeats=2 --warmup=1)
  RECIPE=(--batch_size=4 --block_size=32 --n_layer=2 --n_head=2 --n_embd=32 --max_iters=40
          --lr_decay_iters=40 --warmup_iters=5 --eval_interval=10 --eval_iters=2 --log_interval=10)
else
  T_TESTS=170; T_BENCH=50; T_RECIPE=240
  TESTS=()
  BENCH=(--config=gpu --steps=10 --repeats=5)
  RECIPE=(--batch_size=64 --block_size=256 --n_layer=6 --n_head=6 --n_embd=384 --max_iters=5000
          --lr_decay_iters=5000 --warmup_iters=100 --eval_interval=250 --eval_iters=200 --log_interval=100)
fi
SUMMARY=()
note() { SUMMARY+=("$1"); }
status() {  # status NAME RC LIMIT: one summary line
  local what="exit $2"
  [ "$2" = 0 ] && what="ok"
  { [ "$2" = 124 ] || [ "$2" = 130 ] || [ "$2" = 137 ]; } && what="stopped at its ${3}s limit (exit $2)"
  note "$1: $what"
}
part() { echo; echo "== $1 ($(( $(date +%s) - START ))s in)"; }

{
  date -u
  [ $DRY = 1 ] && echo "DRY RUN on the CuPy stand-in (CPU): flow only, no measurement"
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | head -3
  else echo "no nvidia-smi"; fi
  $PY -c "import numpy, cupy, torch; print('numpy', numpy.__version__, 'cupy', cupy.__version__, 'torch', torch.__version__, 'torch cuda', torch.cuda.is_available())" 2>&1
} | tee "$OUT_DIR/machine.txt"

part "1. the test suite on cuda (limit ${T_TESTS}s)"
timeout -s INT -k 10 "$T_TESTS" $PY -m pytest -q -p no:cacheprovider --device=cuda -rfE \
  --junitxml="$OUT_DIR/junit_cuda.xml" "${TESTS[@]}" 2>&1 | tee "$OUT_DIR/tests_cuda.txt"
status "1. tests on cuda" "${PIPESTATUS[0]}" "$T_TESTS"
note "   $(grep -E '(passed|failed|error)' "$OUT_DIR/tests_cuda.txt" | tail -1)"
note "   $(grep -E '^tests run on the device' "$OUT_DIR/tests_cuda.txt" | tail -1)"
while read -r line; do note "   $line"; done < <(grep -E '^(FAILED|ERROR) ' "$OUT_DIR/tests_cuda.txt")

for tf32 in False True; do
  part "2. the training step against PyTorch eager, TF32 $tf32 (limit ${T_BENCH}s)"
  cupy_tf32=0; [ $tf32 = True ] && cupy_tf32=1
  CUPY_TF32=$cupy_tf32 timeout -s INT -k 10 "$T_BENCH" $PY benchmarks/bench_train.py --device=cuda \
    --tf32=$tf32 "${BENCH[@]}" 2>&1 | tee "$OUT_DIR/bench_train_tf32_$tf32.txt"
  status "2. step vs torch, TF32 $tf32" "${PIPESTATUS[0]}" "$T_BENCH"
  while read -r line; do note "   $line"; done < <(grep -E '^\| (ours|torch)' "$OUT_DIR/bench_train_tf32_$tf32.txt")
done

DATA_FILE=${DATA:-$ROOT/benchmarks/data/tinyshakespeare.txt}
if [ -f "$DATA_FILE" ]; then SOURCE=(--data="$DATA_FILE"); else SOURCE=(--dataset=pydoc); fi
part "3. nanoGPT's GPU recipe on ${SOURCE[0]#--} (limit ${T_RECIPE}s)"
timeout -s INT -k 10 "$T_RECIPE" $PY -m tinygrad_gpt train "${SOURCE[@]}" --out_dir="$OUT_DIR/recipe" \
  --device=cuda "${RECIPE[@]}" --dropout=0.2 --learning_rate=1e-3 --min_lr=1e-4 --beta2=0.99 \
  --progress=False --always_save_checkpoint=False --sample_tokens=200 2>&1 | tee "$OUT_DIR/recipe.txt"
status "3. recipe (${SOURCE[0]#--})" "${PIPESTATUS[0]}" "$T_RECIPE"
$PY - "$OUT_DIR/recipe/log.jsonl" <<'PYEOF' 2>&1 | tee "$OUT_DIR/loss_curve.txt"
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])] if __import__("os").path.exists(sys.argv[1]) else []
steps = [r for r in rows if "loss" in r]
evals = [r for r in rows if "val_loss" in r]
print("loss curve (evaluations): iter, train loss, val loss")
for r in evals:
    print(f"  {r['iter']:5d}  {r['train_loss']:.4f}  {r['val_loss']:.4f}")
if steps:
    ms = sorted(r["ms"] for r in steps[1:] or steps)
    print(f"{len(steps)} steps, last loss {steps[-1]['loss']:.4f}, median {ms[len(ms) // 2]:.1f} ms/step")
PYEOF
$PY -m tinygrad_gpt plot --out_dir="$OUT_DIR/recipe" > /dev/null 2>&1 && note "   loss curve drawn: $OUT_DIR/recipe/loss.png"
while read -r line; do note "   $line"; done < <(grep -vE '^loss curve' "$OUT_DIR/loss_curve.txt" | tail -4)
rm -f "$OUT_DIR/recipe/"*.safetensors  # keep the log and the figure, not the weights

echo
echo "== summary ($(( $(date +%s) - START ))s in all)" | tee "$OUT_DIR/summary.txt"
printf '%s\n' "${SUMMARY[@]}" | tee -a "$OUT_DIR/summary.txt"
