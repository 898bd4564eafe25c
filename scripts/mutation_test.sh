#!/usr/bin/env bash
# Mutation testing of the core modules (issue 16, item 7): kernels, linear regions, the search's ranking and
# pruning decisions, the meta-gradients and the few-shot probe, against the default tests that cover them.
#
# Tool: mutmut 3 (https://pypi.org/project/mutmut/). Why: maintained, pip-installable, mutates at the function
# level and runs each mutant in a fork of an already-imported test session with only the tests that reach the
# mutated function, which is what makes a torch code base feasible in < 30 minutes on 2 cores (cosmic-ray starts a
# fresh interpreter per mutant: ~5 s of torch import each).
#
# What is mutated: nas/kernels.py, nas/regions.py, nas/ranking.py, meta/algorithms.py, fewshot/probe.py in full,
# and the search's decision functions of nas/loop.py (_stages, _next_stage, _apply_stage, _random_genotype: which
# candidates a stage has, which ops a stage removes, when the search ends); the rest of loop.py (data loading,
# scoring, checkpoints) is marked `# pragma: no mutate block` in the scratch copy only.
#
# It works on a scratch copy (the repository is never modified) and writes, in the scratch folder:
#   summary.txt    per module killed / survived / total, the total score, the survivors that docs/mutation.md lists
#                  as equivalent and the score over the non-equivalent mutants (also printed)
#   survivors.txt  every mutant that was not killed, "NAME STATUS [equivalent]"; `mutmut show NAME` inside the
#                  scratch folder shows its diff
#   run.log, results.txt  mutmut's own output
#
# Usage: scripts/mutation_test.sh [JOBS]        (JOBS: parallel mutants, default 2)
#   MUTATION_TARGETS="a.py b.py"  mutate only these files (default: all of the above)
#   MUTATION_TESTS="tests/x.py"   run only these test files (default: the tests of the chosen targets)
#   MUTATION_WORKDIR=DIR  keep the scratch copy there (default: a new temporary folder)
#   MUTATION_TIMEOUT=S    stop after S seconds (default 1800)
#   PYTHON=...            interpreter with the project installed (default .venv/bin/python)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
JOBS=${1:-2}
WORK=${MUTATION_WORKDIR:-$(mktemp -d /tmp/metantk-mutation.XXXXXX)}
LIMIT=${MUTATION_TIMEOUT:-1800}

# target -> the default-suite test files that exercise it (only these are collected)
declare -A TESTS_OF=(
  [metantk_zoo/nas/kernels.py]="tests/test_kernels_closed_form.py tests/test_kernels.py tests/test_mutants_kernels.py"
  [metantk_zoo/nas/regions.py]="tests/test_kernels_closed_form.py tests/test_regions.py tests/test_mutants_kernels.py"
  [metantk_zoo/nas/ranking.py]="tests/test_decisions.py tests/test_mutants_ranking.py"
  [metantk_zoo/nas/loop.py]="tests/test_decisions.py tests/test_mutants_ranking.py"
  [metantk_zoo/meta/algorithms.py]="tests/test_meta_gradients.py tests/test_meta.py tests/test_mutants_meta.py"
  [metantk_zoo/fewshot/probe.py]="tests/test_probe_known.py tests/test_evaluate.py tests/test_mutants_probe.py"
)
DEFAULT_TARGETS="metantk_zoo/nas/kernels.py metantk_zoo/nas/regions.py metantk_zoo/nas/ranking.py
  metantk_zoo/nas/loop.py metantk_zoo/meta/algorithms.py metantk_zoo/fewshot/probe.py"
read -r -a TARGETS <<< "$(echo ${MUTATION_TARGETS:-$DEFAULT_TARGETS})"
if [[ -n "${MUTATION_TESTS:-}" ]]; then
  read -r -a TESTS <<< "$MUTATION_TESTS"
else
  TESTS=()
  for t in "${TARGETS[@]}"; do
    [[ -n "${TESTS_OF[$t]:-}" ]] || { echo "no test list for $t: set MUTATION_TESTS" >&2; exit 2; }
    for f in ${TESTS_OF[$t]}; do
      [[ -f "$ROOT/$f" && " ${TESTS[*]} " != *" $f "* ]] && TESTS+=("$f")
    done
  done
fi

"$PY" -c "import mutmut" 2>/dev/null || "$PY" -m pip install -q "mutmut==3.8.1"

mkdir -p "$WORK"
rm -rf "$WORK/mutants" "$WORK/metantk_zoo" "$WORK/tests"
cp -r "$ROOT/metantk_zoo" "$ROOT/tests" "$WORK/"
cp "$ROOT/pyproject.toml" "$WORK/"
find "$WORK" -name __pycache__ -prune -exec rm -rf {} +

# loop.py: only the decision functions are mutated (scratch copy only): every other top-level definition is
# wrapped in "# pragma: no mutate start" / "# pragma: no mutate end" comment lines
"$PY" - "$WORK/metantk_zoo/nas/loop.py" <<'EOF'
import ast, sys
path = sys.argv[1]
keep = {"_stages", "_next_stage", "_apply_stage", "_random_genotype"}
src = open(path).read().split("\n")
nodes = [n for n in ast.parse("\n".join(src)).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
for node in reversed(nodes):  # bottom-up: the line numbers above stay valid
    if node.name not in keep:
        src.insert(node.end_lineno, "# pragma: no mutate end")
        src.insert(min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1, "# pragma: no mutate start")
open(path, "w").write("\n".join(src))
EOF

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
echo "mutating: ${TARGETS[*]}"
echo "tests:    ${TESTS[*]}"
start=$(date +%s)
load0=$(cut -d' ' -f1-3 /proc/loadavg)
# one OpenMP thread per mutant process: JOBS processes share the cores
status=0
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 timeout "$LIMIT" "$PY" -m mutmut run --max-children "$JOBS" > run.log 2>&1 || status=$?
end=$(date +%s)
load1=$(cut -d' ' -f1-3 /proc/loadavg)
"$PY" -m mutmut results --all true > results.txt 2>&1 || true

"$PY" - "$start" "$end" "$status" "$ROOT/docs/mutation.md" "$JOBS" "$load0" "$load1" <<'EOF' | tee summary.txt
import collections, os, re, sys
start, end, status = (int(v) for v in sys.argv[1:4])
doc, jobs, load0, load1 = sys.argv[4:8]
# docs/mutation.md lists equivalent mutants as table rows "| `NAME` | ... |" under its "## Equivalent mutants" heading
equivalent = set()
if os.path.exists(doc):
    section = re.search(r"^## Equivalent mutants$(.*?)(?=^## |\Z)", open(doc).read(), re.M | re.S)
    if section:
        equivalent = set(re.findall(r"^\|\s*`(metantk_zoo\.[^`]+)`\s*\|", section.group(1), re.M))
counts = collections.defaultdict(collections.Counter)
survivors = []
for line in open("results.txt"):
    m = re.match(r"\s*(([\w.]+?)\.(?:x_|xǁ)\S*): (.+)$", line.strip())
    if not m:
        continue
    name, module, verdict = m.groups()
    detected = verdict in ("killed", "timeout")
    counts[module]["killed" if detected else verdict] += 1
    if not detected:
        eq = name in equivalent
        counts[module]["equivalent"] += eq
        survivors.append(f"{name} {verdict}" + (" equivalent" if eq else ""))
open("survivors.txt", "w").write("".join(s + "\n" for s in survivors))
total = collections.Counter()
def line(module, c):
    n = sum(v for k, v in c.items() if k != "equivalent")
    k, eq = c["killed"], c["equivalent"]
    other = ", ".join(f"{s} {v}" for s, v in sorted(c.items()) if s not in ("killed", "equivalent") and v)
    score = f"{k / (n - eq):.1%}" if n > eq else "-"
    print(f"{module:34s} killed {k:4d} / {n:4d}  equivalent {eq:3d}  non-equivalent killed {score:>6s}"
          + (f"  ({other})" if other else ""))
for module, c in sorted(counts.items()):
    total.update(c)
    line(module, c)
line("all", total)
n = sum(v for k, v in total.items() if k != "equivalent")
k, eq = total["killed"], total["equivalent"]
if n:
    print(f"killed {k} / {n} = {k / n:.1%}; survivors listed as equivalent in docs/mutation.md: {eq}; "
          f"non-equivalent mutants killed: {k} / {n - eq} = {k / max(1, n - eq):.1%}")
    print(f"wall time {end - start} s with {jobs} jobs; load average {load0} at start, {load1} at end; "
          f"mutmut exit status {status}" + (" (time limit reached: incomplete)" if status == 124 else ""))
known = set()  # survivors docs/mutation.md explains as gaps (its "Surviving mutants that are not equivalent")
if os.path.exists(doc):
    section = re.search(r"^## Surviving mutants that are not equivalent$(.*?)(?=^## |\Z)", open(doc).read(), re.M | re.S)
    if section:
        known = set(re.findall(r"^\|\s*`(metantk_zoo\.[^`]+)`\s*\|", section.group(1), re.M))
unlisted = [s for s in survivors if not s.endswith(" equivalent")]
print(f"{len(unlisted)} survivor(s) not equivalent, {sum(s.split()[0] in known for s in unlisted)} of them explained "
      f"in docs/mutation.md")
new = [s for s in unlisted if s.split()[0] not in known]
if new:
    print(f"{len(new)} survivor(s) neither killed nor listed in docs/mutation.md:")
    print("".join(f"  {s}\n" for s in new), end="")
stale = sorted(equivalent - {s.split()[0] for s in survivors} - {n for n in equivalent if not any(
    n.startswith(m + ".") for m in counts)})
if stale:
    print(f"{len(stale)} mutant(s) listed as equivalent in docs/mutation.md were killed or no longer exist: "
          + ", ".join(stale))
EOF
echo "scratch copy: $WORK (summary.txt, survivors.txt, run.log, results.txt; 'cd $WORK && $PY -m mutmut show NAME')"
