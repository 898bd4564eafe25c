#!/usr/bin/env bash
# The one prepared GPU check (issue 19): the GPU tests and the GPU benchmarks on one GPU, within 8 minutes, into one
# JSON and one Markdown report.
#
#   scripts/gpu_check.sh [OUT_DIR]        OUT_DIR defaults to $OUT (the device tool's folder), else gpu_check_out
#
# Writes OUT_DIR/gpu_check.json and OUT_DIR/gpu_check.md (plus the parts they gather: pytest_gpu.xml, pytest_gpu.log,
# part_*.json, machine.json). Each step has its own time limit, so one that hangs costs only its share:
#   tests 180 s | search (Gram + time per candidate, engine vs reference) 75 s | candidate batching 40 s |
#   CUDA-graph replay vs eager passes 40 s | full mini5 search 90 s (projected from finished stages when it does not
#   end) | RFS 25 s | eval 25 s
# Works from a checkout without installing it (PYTHONPATH=repo root); Python packages the machine lacks (opacus)
# are installed from wheels in .whl/ when that folder is there (name it in the device tool's `carry`).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu_check_out}}
mkdir -p "$out"
py=${PYTHON:-$(command -v python3 || command -v python)}
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/metantk_site \
    .whl/*.whl && export PYTHONPATH=/tmp/metantk_site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} METANTK_NO_PROGRESS=1 GPU_BENCH_TMP=${TMPDIR:-/tmp}
start=$(date +%s)
"$py" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print(torch.cuda.get_device_name(0))" \
  || { echo "gpu_check: no CUDA GPU visible to $py; nothing to check" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.sm --format=csv > "$out/nvidia_smi.csv" 2>&1 || true

timeout 180 "$py" -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -o addopts="" --strict-markers -ra \
  --junitxml="$out/pytest_gpu.xml" > "$out/pytest_gpu.log" 2>&1
echo "tests: exit $? ($(( $(date +%s) - start )) s); $(tail -n 1 "$out/pytest_gpu.log")"

bench() {  # part, time limit (s), extra args
  timeout "$2" "$py" scripts/gpu_bench.py --out "$out" --part "$1" "${@:3}" 2>> "$out/gpu_bench.log"
  echo "$1: exit $? ($(( $(date +%s) - start )) s)"
}
bench search 75
bench batch 40
bench graphs 40
bench full 90 --budget 80
bench rfs 25
bench eval 25
"$py" scripts/gpu_bench.py --out "$out" --report 2>> "$out/gpu_bench.log"
echo "gpu_check: $(( $(date +%s) - start )) s; report in $out/gpu_check.md and $out/gpu_check.json"
