#!/usr/bin/env bash
# The GPU check of flowtensor's CUDA backend, made by `cargo xtask gpu-check`.
# Needs an NVIDIA driver, python3 with PyTorch (CUDA), and nothing else: the
# Rust binaries were built on the machine that made this folder.
#
#   bash run.sh                 # results (and table.md) in ./results, or in $OUT
#
# 1. the parity suites on cuda:0 (every storage operation, gradients, the
#    convolution exponential, Glow training) against the CPU backend;
# 2. the criterion groups conv2d_fwd, convexp_fwd, convexp_fwdbwd and
#    glow_net_*, vector_flows on cuda:0, and a glow-mnist-ref training run;
# 3. the same cases in PyTorch on the same GPU; then the table.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${OUT:-$here/results}"
mkdir -p "$out"
cd "$here"
status=0
step() { echo; echo "== $*"; }

step "GPU"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt" || status=1

step "parity: flowtensor's CUDA backend against the CPU backend"
timeout 300 ./bin/cuda_parity --test-threads=1 2>&1 | tee "$out/parity.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
timeout 300 ./bin/cuda_vector --test-threads=1 2>&1 | tee -a "$out/parity.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
timeout 300 ./bin/cuda_step --test-threads=1 --nocapture 2>&1 | tee -a "$out/parity.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

step "flowtensor benches on cuda:0"
export FLOWS_BENCH_DEVICE=cuda:0 CRITERION_HOME="$out/criterion"
timeout 240 ./bin/conv --bench --warm-up-time 1 --measurement-time 2 'conv2d_fwd|glow_net' 2>&1 | tee "$out/bench.txt"
timeout 240 ./bin/conv_exp --bench --warm-up-time 1 --measurement-time 2 'convexp_fwd|convexp_fwdbwd' 2>&1 | tee -a "$out/bench.txt"
timeout 240 ./bin/vector_flows --bench --warm-up-time 1 --measurement-time 2 2>&1 | tee -a "$out/bench.txt"

steps=200
if [ -d mnist ]; then
    step "glow-mnist-ref: $steps training steps on cuda:0 (flowtensor, then PyTorch)"
    timeout 300 ./bin/xtask train --preset glow-mnist-ref --device cuda:0 --data mnist --steps "$steps" \
        --eval-every "$steps" --samples 4 --quiet --out "$out/glow-mnist-ref" 2>&1 | tail -5
    timeout 300 python3 glow_mnist_ref.py mnist --steps "$steps" --eval-every "$steps" --device cuda \
        2>&1 | tee "$out/torch_glow.txt"
else
    echo "no mnist/ folder: the glow-mnist-ref step is left out"
fi

step "PyTorch on the same GPU"
timeout 300 python3 device_micro.py --device cuda >"$out/torch.json" || status=1
timeout 300 python3 vector_flows.py --device cuda | tee "$out/torch_vector.txt" || status=1

step "table"
python3 table.py "$out" | tee "$out/table.md" || status=1
exit $status
