#!/usr/bin/env bash
# One prepared run of every CUDA check and GPU speed benchmark, from the repository root.
#
# GPU machine (python3 with torch+CUDA, torchvision, scipy, ...; no captum, no internet):
#     bash benchmarks/gpu_checks.sh
# It needs, next to the working tree (both ignored through .git/info/exclude):
#     .whl/       the captum wheel (pip download --no-deps ... -d .whl captum==0.9.0)
#     .gpucache/  small_cnn-shapes-<hash>.pt from captum_ext.benchmark.train("small_cnn",
#                 "shapes") (CAPTUM_EXT_CACHE); without it bench_caso trains first (~25 s on CPU).
# Local smoke run on CPU with tiny sizes (no nvidia-smi, Gloo instead of NCCL):
#     GPU_CHECKS_CPU=1 PY=.venv/bin/python SITE=/tmp/gpu_checks_site bash benchmarks/gpu_checks.sh
#
# Each step runs under `timeout` (its own cap, and never past the whole run's BUDGET seconds),
# logs to $OUT/<name>.log (OUT defaults to /tmp/gpu_out; at most 8 files are written there), and
# a failed step does not stop the run. The end prints step -> exit code (124: timed out) and
# writes it to $OUT/summary.txt; the script exits 1 if any step failed.

set -u
OUT=${OUT:-/tmp/gpu_out}
PY=${PY:-python3}
CPU_SMOKE=${GPU_CHECKS_CPU:-0}
BUDGET=${BUDGET:-340}
SITE=${SITE:-/tmp/site} # where the captum wheel is installed (--target)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export CAPTUM_EXT_CACHE=$PWD/.gpucache
export CAPTUM_EXT_TEST_CACHE=$PWD/.gpucache # tests/conftest.py: reuse the trained weights
START=$(date +%s)
NAMES=()
RCS=()
SECS=()

# step NAME LOG CAP CMD...: run CMD with `timeout`, append its output to $OUT/LOG.log.
step() {
    local name=$1 log="$OUT/$2.log" cap=$3
    shift 3
    local left=$((BUDGET - ($(date +%s) - START)))
    local limit=$((cap < left ? cap : left))
    local t0 rc
    t0=$(date +%s)
    if ((limit < 10)); then
        echo "=== $name: skipped, ${left}s left of the ${BUDGET}s budget" | tee -a "$log"
        rc=skipped
    else
        echo "=== $name (timeout ${limit}s): $*" | tee -a "$log"
        timeout -k 5 "$limit" "$@" 2>&1 | tee -a "$log"
        rc=${PIPESTATUS[0]}
        echo "=== $name: exit $rc after $(($(date +%s) - t0)) s" | tee -a "$log"
    fi
    NAMES+=("$name")
    RCS+=("$rc")
    SECS+=("$(($(date +%s) - t0))")
}

# captum (pure python) from the carried wheel; the GPU image has its dependencies.
step install env 60 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$SITE" .whl/*.whl
export PYTHONPATH=$SITE:$PWD

if [ "$CPU_SMOKE" = 1 ]; then
    DEV=cpu
    DIST_ARGS=(--backend gloo --device cpu --n 60)
    PS_ARGS=(--quick --resnet50 --r50-n 2 --r50-batch 2 --r50-loop 1)
    RELEX_ARGS=(--quick --repeats 1)
    CASO_ARGS=(--batch 2 --repeats 1)
else
    DEV=cuda
    DIST_ARGS=()
    PS_ARGS=(--resnet50 --r50-n 256 --r50-batch 64 --r50-loop 32)
    RELEX_ARGS=(--repeats 5)
    CASO_ARGS=(--batch 16 --repeats 3)
    step nvidia-smi env 20 nvidia-smi -L
fi
step versions env 60 "$PY" -c "
import os, torch, captum, captum_ext
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())
print('captum', captum.__version__, captum.__file__)
print('captum_ext', captum_ext.__file__)
print('threads', torch.get_num_threads(), 'cpus', os.cpu_count())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(p.name, p.total_memory // 2**20, 'MiB', p.multi_processor_count, 'SMs')
    print('cudnn', torch.backends.cudnn.version(), 'nccl', torch.cuda.nccl.version())
cache = os.environ['CAPTUM_EXT_CACHE']
print('cache', cache, sorted(os.listdir(cache)) if os.path.isdir(cache) else 'missing')
"
step distributed dist 90 "$PY" benchmarks/gpu_distributed_check.py ${DIST_ARGS[@]+"${DIST_ARGS[@]}"}
step bench_relex relex 60 "$PY" benchmarks/bench_relex.py --device "$DEV" --skip-fidelity \
    "${RELEX_ARGS[@]}"
step bench_parameter_saliency ps 120 "$PY" benchmarks/bench_parameter_saliency.py \
    --device "$DEV" "${PS_ARGS[@]}"
step pytest_cuda pytest 90 "$PY" -m pytest -q -x -p no:cacheprovider \
    tests/dataset_attribution/test_dataset_attribution.py -k "cuda or device"
# Last: the longest and least predictable step gets what is left of the budget.
step bench_caso caso 220 "$PY" benchmarks/bench_caso.py --device "$DEV" "${CASO_ARGS[@]}"

failed=0
summary=$(
    echo
    echo "step                       exit  seconds"
    for i in "${!NAMES[@]}"; do
        rc=${RCS[$i]}
        note=""
        if [ "${NAMES[$i]}" = pytest_cuda ] && [ "$rc" = 5 ]; then
            note="  (no tests selected: not a failure)"
        elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
            note="  (timed out)"
        fi
        printf '%-26s %7s %8s%s\n' "${NAMES[$i]}" "$rc" "${SECS[$i]}" "$note"
    done
    echo "total $(($(date +%s) - START)) s; logs in $OUT"
)
for i in "${!NAMES[@]}"; do
    rc=${RCS[$i]}
    if [ "$rc" != 0 ] && ! { [ "${NAMES[$i]}" = pytest_cuda ] && [ "$rc" = 5 ]; }; then
        failed=1
    fi
done
echo "$summary" | tee "$OUT/summary.txt"
exit $failed
