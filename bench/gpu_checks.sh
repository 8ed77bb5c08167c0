#!/usr/bin/env bash
# The GPU checks of the sparse MoE work in one run of about 8 minutes, on a
# CUDA machine that has JAX and torch (CUDA builds) and pytest but no package
# registry. From the repository root:
#
#   bash bench/gpu_checks.sh [WHEELS_DIR] [LOG_DIR]
#
# WHEELS_DIR (default .whl) holds Python 3.12 wheels of what the machine
# lacks (keras, namex, optree, jsonschema, jsonschema-specifications,
# referencing, rpds-py, pyyaml, scipy if absent); they are installed into
# /tmp/site. Logs and the bench reports go to LOG_DIR (default reports/gpu).
# Steps, each bounded by `timeout` so that one stuck step leaves time for the
# rest:
#   1. the GPU MoE bench (bfloat16 and float32) on JAX and on torch;
#   2. the MoE specs' conformance with `--device gpu` on JAX and torch;
#   3. the MoE unit tests on JAX and torch (full float32 matmuls pinned by
#      tests/conftest.py), timing the slowest tests.
set -uo pipefail
cd "$(dirname "$0")/.."
wheels=${1:-.whl}
logs=${2:-reports/gpu}
mkdir -p "$logs"
if compgen -G "$wheels/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/site "$wheels"/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$logs/gpu.txt"

step() {  # step NAME SECONDS BACKEND COMMAND...
    local name=$1 seconds=$2 backend=$3
    shift 3
    echo "== $name ($backend)"
    KERAS_BACKEND=$backend timeout "$seconds" "$@" >"$logs/$name-$backend.log" 2>&1
    echo "exit $? after $SECONDS s" | tee -a "$logs/$name-$backend.log"
    tail -n 40 "$logs/$name-$backend.log"
}

# torch's compiled rows compile every variant (inductor): it gets longer.
step bench 120 jax python3 -m bench --suite moe --device gpu \
    --out "$logs/bench-jax.md"
step bench 180 torch python3 -m bench --suite moe --device gpu \
    --out "$logs/bench-torch.md"
for backend in jax torch; do
    step conformance 45 $backend python3 -m pytest keras_mtl_conformance -q \
        -p no:cacheprovider --device gpu -k "sparse_moe or hierarchical_moe" \
        --report-dir "$logs/conformance-$backend"
done
for backend in jax torch; do
    step tests 60 $backend python3 -m pytest -q -p no:cacheprovider -n 4 \
        --durations=15 tests/test_moe.py tests/test_multi_task.py \
        tests/test_training_loops.py
done
