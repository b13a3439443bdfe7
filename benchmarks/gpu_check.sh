#!/usr/bin/env bash
# The GPU check: on a fresh machine with an NVIDIA GPU, in at most 8 minutes,
# install softmax-xp from this checkout, run the GPU tests of every backend and
# the GPU kernels' tests on the device, then `softmax-xp bench --device gpu`.
#
#   benchmarks/gpu_check.sh [--dry-run] WHEELS_DIR OUT_DIR
#
# The machine has torch (CUDA), CuPy, JAX (CUDA), pytest and hypothesis;
# WHEELS_DIR holds the wheels it lacks (array-api-compat, array-api-strict,
# mpmath, pytest-xdist with execnet, and for the project's own build hatchling
# with its dependencies), installed offline. Each step writes OUT_DIR/<step>.log; the bench writes its JSON and
# PNGs to OUT_DIR/bench. A failing step does not stop the next ones; the exit
# status is 1 if any step failed (or timed out), and OUT_DIR/summary.txt lists
# each step's status and seconds.
#
# --dry-run prints each step's command and time limit instead of running it
# (and writes the logs and the summary as if every step had passed): this
# checks the script's logic on a machine without a GPU.
#
# Environment: PYTHON (default python3), GPU_CHECK_BUDGET (seconds for all
# steps, default 480), GPU_CHECK_WORKERS (pytest-xdist workers, default 8;
# 0: none).
set -u -o pipefail

dry_run=0
if [[ "${1:-}" == "--dry-run" ]]; then
    dry_run=1
    shift
fi
if [[ $# -ne 2 ]]; then
    echo "usage: benchmarks/gpu_check.sh [--dry-run] WHEELS_DIR OUT_DIR" >&2
    exit 2
fi
wheels=$(cd "$1" 2>/dev/null && pwd) || {
    echo "gpu_check: WHEELS_DIR $1 is not a folder" >&2
    exit 2
}
mkdir -p "$2" || exit 2
out=$(cd "$2" && pwd)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 2

py=${PYTHON:-python3}
budget=${GPU_CHECK_BUDGET:-480}
workers=${GPU_CHECK_WORKERS:-8}
start=$SECONDS
failed=()
: >"$out/summary.txt"

# JAX takes 75% of the GPU at its first array unless told not to: the tests run
# several processes, and the bench shares the GPU with torch and CuPy
export XLA_PYTHON_CLIENT_PREALLOCATE=false
export PYTHONUNBUFFERED=1
# this checkout's code whether or not its install step worked (the same files)
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
# the GPU tests run without the CPU-mode switches of tests-gpu-logic
unset TRITON_INTERPRET SOFTMAX_XP_GPU_LOGIC

# step NAME LIMIT_SECONDS COMMAND...: run COMMAND under `timeout`, at most
# LIMIT seconds and never past the budget, its output in OUT_DIR/NAME.log
step() {
    local name=$1 limit=$2
    shift 2
    local left=$((budget - (SECONDS - start)))
    ((limit > left)) && limit=$left
    local log="$out/$name.log" t0=$SECONDS rc
    if ((limit <= 0)); then
        echo "budget of ${budget}s used up before this step" >"$log"
        rc=124
    elif ((dry_run)); then
        printf 'dry run: timeout %ss %s\n' "$limit" "$*" | tee "$log"
        rc=0
    else
        echo "== $name (at most ${limit}s): $*"
        echo "\$ $*" >"$log"
        timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
        rc=$?
    fi
    local status=ok
    if ((rc == 124 || rc == 137)); then
        status="timed out after ${limit}s"
    elif ((rc != 0)); then
        status="failed (exit $rc)"
    fi
    [[ $status == ok ]] || failed+=("$name")
    printf '%-14s %-26s %4ss\n' "$name" "$status" "$((SECONDS - t0))" |
        tee -a "$out/summary.txt"
}

# the machine: GPU, driver, library versions
step env 30 bash -c "nvidia-smi; $py - <<'EOF'
import importlib, platform
print('python', platform.python_version())
for m in ('torch', 'triton', 'cupy', 'jax', 'jaxlib', 'numpy', 'pytest', 'hypothesis'):
    try:
        print(m, importlib.import_module(m).__version__)
    except Exception as exc:
        print(m, 'missing:', type(exc).__name__, exc)
EOF"

# offline installs: every wheel given, then this checkout without its dependencies
step install 90 bash -c "$py -m pip install --no-index --find-links '$wheels' '$wheels'/*.whl \
    && $py -m pip install --no-index --find-links '$wheels' --no-deps '$root'"

pytest=("$py" -m pytest -p softmax_xp._bench._sync_debug --tb=short --durations=10 -q)
# xdist's workers only where its wheel was given (or installed already)
if ((workers > 0)) && "$py" -c "import xdist" 2>/dev/null; then
    pytest+=(-n "$workers" --dist loadfile)
fi
kernel_tests=(tests/test_gpu_triton.py tests/test_gpu_cupy.py tests/test_gpu_pallas.py)
ignore=()
for f in "${kernel_tests[@]}"; do
    ignore+=(--ignore "$f")
done

# the test suite on the GPU backends (torch under sync debug mode "error")
step tests-gpu 180 env SOFTMAX_XP_BACKENDS=torch-cuda,cupy,jax-gpu \
    "${pytest[@]}" "${ignore[@]}" tests

# the kernels against the generic core on the device (a missing file fails)
step tests-kernels 90 env SOFTMAX_XP_BACKENDS=numpy,torch,torch-cuda,cupy,jax,jax-gpu \
    "${pytest[@]}" "${kernel_tests[@]}"

# the GPU benchmark: JSON and PNGs under OUT_DIR/bench
step bench 200 "$py" -m softmax_xp bench --device gpu --no-progress --out "$out/bench"

echo "total $((SECONDS - start))s of ${budget}s" | tee -a "$out/summary.txt"
if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]} (logs in $out)" | tee -a "$out/summary.txt"
    exit 1
fi
echo "all steps passed (logs in $out)" | tee -a "$out/summary.txt"
