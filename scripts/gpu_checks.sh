#!/usr/bin/env bash
# GPU checks in one pass, for a machine lent for minutes (issue 9's GPU figures, issue 8's GPU trainer configs):
#
#     bash scripts/gpu_checks.sh OUT_DIR [SECONDS]
#
# 1. the framework benchmark of each family in its own process and time slot (fp32 / bf16-mixed / bf16 + compile,
#    GPU utilisation, batch scaling), all into OUT_DIR/results_gpu.{json,md} (`--framework-family` keeps the other
#    families' rows; each stage is saved as it finishes, so a slot that runs out keeps what it measured): copy them
#    to benchmarks/results_<gpu>.{json,md} and quote them in the README with the date;
# 2. one epoch of the tiny U-Net with trainer=gpu, ddp and fsdp (checkpoints written, test metrics printed).
# Everything is logged to OUT_DIR/log.txt. SECONDS (default 540) bounds the whole pass: 80 % for the benchmarks, the
# U-Net's slot the longest (a cold Inductor compile of its training step took over 150 s on an H100 and 142-159 s on
# a 2-core CPU, and a family's GPU stage compiles twice: at the batch that fills the GPU, first, then at the
# recipe's), the rest for the trainings (~20 s each). PYTHON (default python3) must have the project's dependencies:
# on a lent machine that has torch, lightning and timm but not hydra-core, omegaconf, antlr4-python3-runtime,
# soundfile, cffi and pycparser, install those from carried wheels first (the device tool's README says how).
set -u
PYTHON=${PYTHON:-python3}
OUT=${1:?usage: bash scripts/gpu_checks.sh OUT_DIR [SECONDS]}
BUDGET=${2:-540}
mkdir -p "$OUT"
LOG=$OUT/log.txt
T0=$(date +%s)
elapsed() { echo $(($(date +%s) - T0)); }
export PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  "$PYTHON" -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"
} >>"$LOG" 2>&1

bench() { # family, share of the budget in percent
  local left=$((BUDGET * 80 / 100 - $(elapsed))) slot=$((BUDGET * $2 / 100))
  ((slot > left)) && slot=$left
  ((slot < 30)) && { echo "skip $1 (no time left)" >>"$LOG"; return; }
  echo "=== benchmark $1 (slot $slot s) at $(elapsed) s" >>"$LOG"
  timeout "$slot" "$PYTHON" scripts/benchmark.py framework --framework-family "$1" --out "$OUT/results_gpu.json" \
    >"/tmp/gpu_checks_bench_$1.txt" 2>&1
  echo "rc=$? at $(elapsed) s" >>"$LOG"
  grep -E "Error|error" "/tmp/gpu_checks_bench_$1.txt" | tail -5 >>"$LOG"
}
bench optimized_unet 40
bench puzzle_cnn 20
bench rawnet2 12
bench lstm_extractor 8

TINY="model=optimized_unet model.arch=optimized_unet_tiny model.warmup_steps=1 model.figure_every_n_epochs=0
data=abr_small data.simulator.num_patients=12 data.batch_size=8 trainer.max_epochs=1 +trainer.limit_train_batches=2
+trainer.limit_val_batches=1 +trainer.limit_test_batches=1 +trainer.num_sanity_val_steps=0 logger=none"
for trainer in gpu ddp fsdp; do
  left=$((BUDGET - $(elapsed)))
  ((left < 25)) && { echo "skip trainer=$trainer (no time left)" >>"$LOG"; continue; }
  echo "=== train trainer=$trainer at $(elapsed) s" >>"$LOG"
  # shellcheck disable=SC2086  # TINY is a list of overrides
  timeout "$left" "$PYTHON" train.py $TINY trainer=$trainer hydra.run.dir="/tmp/gpu_checks_$trainer" \
    >"/tmp/gpu_checks_$trainer.txt" 2>&1
  echo "rc=$? at $(elapsed) s" >>"$LOG"
  grep -E "Error|error|test/loss |Traceback" "/tmp/gpu_checks_$trainer.txt" | tail -8 >>"$LOG"
  ls "/tmp/gpu_checks_$trainer/checkpoints" >>"$LOG" 2>&1
done
echo "done at $(elapsed) s" >>"$LOG"
