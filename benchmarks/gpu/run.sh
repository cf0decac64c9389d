#!/usr/bin/env bash
# The GPU-day script: on a machine with an NVIDIA GPU, one command that installs the CUDA extra
# matching the driver, runs the GPU tests on real CuPy arrays, runs the kernel tests under
# compute-sanitizer (racecheck, memcheck), and prints the GPU benchmark tables. The steps' time
# limits add up to 8 minutes (150 + 90 + 45 + 45 + 60 + 45 + 45 s); the script goes on after a
# failed or timed-out step and reports every step's status at the end.
#
#     bash benchmarks/gpu/run.sh            # from the repository root
set -uo pipefail
cd "$(dirname "$0")/../.."
status=()
step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit}s)"
    local t0=$SECONDS
    timeout "$limit" "$@"
    local rc=$?
    status+=("$name: rc=$rc, $((SECONDS - t0)) s")
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || {
    echo "no NVIDIA GPU here: run this on a GPU machine"; exit 2; }
major=$(nvidia-smi | sed -n 's/.*CUDA Version: \([0-9]*\)\..*/\1/p' | head -1)
extra=cuda${major:-12}
[ "$extra" = cuda12 ] || [ "$extra" = cuda13 ] || extra=cuda12

if [ ! -x .venv-gpu/bin/python ]; then python3 -m venv .venv-gpu; fi
. .venv-gpu/bin/activate
step "install .[test,gpu-test,$extra] + torch" 150 bash -c \
    "pip install -q --upgrade pip && pip install -q -e '.[test,gpu-test,$extra,bench]' \
     nvidia-cuda-sanitizer-api-cu12 torch"

step "pytest -m 'gpu or cudasim' (real CuPy arrays, real kernels)" 90 \
    python -m pytest -q -m "gpu or cudasim" -p no:cacheprovider

sanitizer=$(command -v compute-sanitizer || find .venv-gpu -name compute-sanitizer -type f | head -1)
if [ -n "$sanitizer" ]; then
    for tool in racecheck memcheck; do
        step "compute-sanitizer --tool $tool (kernel tests)" 45 "$sanitizer" --tool "$tool" \
            --error-exitcode 1 python -m pytest -q -m cudasim tests/kernels/cuda -p no:cacheprovider
    done
else
    status+=("compute-sanitizer: not found (pip install nvidia-cuda-sanitizer-api-cu12)")
fi

step "GaussianMixture: CuPy vs scikit-learn CPU" 60 python benchmarks/bench_gmm.py --gpu --iters 5 --repeat 3
step "routing: CuPy kernels vs PyTorch CUDA" 45 python benchmarks/bench_routing.py --device gpu
step "CapsNet inference: CuPy vs PyTorch CUDA" 45 python benchmarks/bench_models.py --device gpu

echo "=== summary on $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
printf '%s\n' "${status[@]}"
