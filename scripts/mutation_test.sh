#!/usr/bin/env bash
# Mutation testing of the core modules (issue 16, item 7): kernels, linear regions, the search's ranking and
# pruning, the meta-gradients and the few-shot probe, against the default tests that cover them.
#
# Tool: mutmut 3 (https://pypi.org/project/mutmut/). Why: maintained, pip-installable, mutates at the function
# level and runs each mutant in a fork of an already-imported test session with only the tests that reach the
# mutated function, which is what makes a torch code base feasible in < 30 minutes on 2 cores (cosmic-ray starts a
# fresh interpreter per mutant: ~5 s of torch import each).
#
# It works on a scratch copy (the repository is never modified), prints killed / survived / total per module and
# writes the surviving mutants' names to $WORK/survivors.txt (`mutmut show NAME` inside $WORK/ shows a diff).
#
# Usage: scripts/mutation_test.sh [JOBS]        (JOBS: parallel mutants, default 2)
#   MUTATION_WORKDIR=DIR  keep the scratch copy there (default: a new temporary folder)
#   MUTATION_TIMEOUT=S    stop after S seconds (default 1800)
#   PYTHON=...            interpreter with the project installed (default .venv/bin/python)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
JOBS=${1:-2}
WORK=${MUTATION_WORKDIR:-$(mktemp -d /tmp/metantk-mutation.XXXXXX)}
LIMIT=${MUTATION_TIMEOUT:-1800}

TARGETS=(
  metantk_zoo/nas/kernels.py
  metantk_zoo/nas/regions.py
  metantk_zoo/nas/ranking.py
  metantk_zoo/meta/algorithms.py
  metantk_zoo/fewshot/probe.py
)
TESTS=(
  tests/test_decisions.py
  tests/test_kernels_closed_form.py
  tests/test_kernels.py
  tests/test_regions.py
  tests/test_meta_gradients.py
  tests/test_meta.py
  tests/test_probe_known.py
  tests/test_evaluate.py
)

"$PY" -c "import mutmut" 2>/dev/null || "$PY" -m pip install -q "mutmut==3.8.1"

mkdir -p "$WORK"
rm -rf "$WORK/mutants" "$WORK/metantk_zoo" "$WORK/tests"
cp -r "$ROOT/metantk_zoo" "$ROOT/tests" "$WORK/"
cp "$ROOT/pyproject.toml" "$WORK/"
find "$WORK" -name __pycache__ -prune -exec rm -rf {} +

q() { printf '"%s", ' "$@"; }
cat >> "$WORK/pyproject.toml" <<EOF

[tool.mutmut]
source_paths = ["metantk_zoo"]
only_mutate = [$(q "${TARGETS[@]}")]
pytest_add_cli_args_test_selection = [$(q "${TESTS[@]}")]
pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x"]
also_copy = ["tests", "pyproject.toml"]
EOF

cd "$WORK"
start=$(date +%s)
# one OpenMP thread per mutant process: JOBS processes share the cores
status=0
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 timeout "$LIMIT" "$PY" -m mutmut run --max-children "$JOBS" > run.log 2>&1 || status=$?
end=$(date +%s)
"$PY" -m mutmut results --all true > results.txt 2>&1 || true
grep -v ": killed$" results.txt | sed -n 's/^ *\([^:]*\): .*/\1/p' > survivors.txt || true

"$PY" - "$start" "$end" "$status" <<'EOF'
import collections, re, sys
start, end, status = (int(v) for v in sys.argv[1:])
counts = collections.defaultdict(collections.Counter)
for line in open("results.txt"):
    m = re.match(r"\s*([\w.]+?)\.(?:x_|xǁ)\S*: (.+)$", line.strip())
    if not m:
        continue
    counts[m.group(1)][m.group(2)] += 1
total = collections.Counter()
for module, c in sorted(counts.items()):
    total.update(c)
    print(f"{module:40s} " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())) + f"  (total {sum(c.values())})")
n = sum(total.values())
killed = total.get("killed", 0)
print(f"{'all':40s} " + ", ".join(f"{k} {v}" for k, v in sorted(total.items())) + f"  (total {n})")
if n:
    print(f"killed {killed} / {n} = {killed / n:.1%}; wall time {end - start} s; mutmut exit status {status}")
EOF
echo "scratch copy: $WORK (run.log, results.txt, survivors.txt; 'cd $WORK && $PY -m mutmut show NAME')"
