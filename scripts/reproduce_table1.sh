#!/usr/bin/env bash
# Reproduce the MetaNTK-NAS rows of Table 1 (Wang et al., CVPR 2022) on a GPU machine with real data.
#
# One search -> RFS training -> few-shot evaluation (1-shot and 5-shot, the paper's protocol) per seed, for one of
# the four published settings. The paper's "±" is the standard deviation over >= 3 such runs; run 3 seeds.
#
#   scripts/reproduce_table1.sh mini5  DATA_SPEC  OUT_ROOT  [SEEDS...]
#   scripts/reproduce_table1.sh tiered8 /data/tiered-imagenet runs/tiered8 1 2 3
#
# DATA_SPEC is anything `metantk-zoo data info` accepts: a folder written by `metantk-zoo data prepare` (see
# scripts/prepare_data.sh), a Hub id such as GATE-engine/mini_imagenet, or `synthetic` for a dry run.
# Multi-GPU: prefix the search and train commands with `torchrun --nproc_per_node=N -m metantk_zoo.cli`.
# Device: DEVICE=auto (default: the GPU when there is one), cpu, cuda or cuda:N, passed to every command as --device;
# a device that is not there stops the script before anything is written.
# It ends by aggregating the seeds into the Table-1 row (scripts/aggregate_table1.py): OUT_ROOT/table1.{json,md}.
set -euo pipefail

preset=${1:?usage: $0 mini5|mini8|tiered5|tiered8 DATA_SPEC OUT_ROOT [SEEDS...]}
data=${2:?DATA_SPEC missing}
out=${3:?OUT_ROOT missing}
shift 3
device=${DEVICE:-auto}
[ "$#" -gt 0 ] && seeds=("$@") || seeds=(1 2 3)

case "$preset" in
  mini*)   rfs=rfs-mini ;;
  tiered*) rfs=rfs-tiered ;;
  *) echo "unknown preset '$preset': expected mini5, mini8, tiered5 or tiered8" >&2; exit 2 ;;
esac

for seed in "${seeds[@]}"; do
  run="$out/seed$seed"
  # 1. Training-free search: 6 pruning rounds + the edge pass (resumable: re-run the same command).
  metantk-zoo search --preset "$preset" --dataset "$data" --seed "$seed" --out "$run/search" --resume \
    --device "$device"
  # 2. RFS pre-training of the searched genotype on the base classes (batch size, lr, decay, drop-path by preset).
  metantk-zoo train --model "$run/search" --dataset "$data" --preset "$rfs" --seed "$seed" --out "$run/train" --resume \
    --device "$device"
  # 3. Few-shot evaluation: 1000 episodes, 5-way, 50 queries, 5 augmented supports, logistic regression (C=1).
  for shot in 1 5; do
    metantk-zoo eval "$run/train" --dataset "$data" --protocol paper --n-way 5 --n-shot "$shot" --json \
      --device "$device" \
      > "$run/eval_${shot}shot.json"
  done
done
# 4. The Table-1 row: mean ± std over the seeds, each seed with its 95% CI (PYTHON: the interpreter metantk-zoo uses)
"${PYTHON:-python3}" "$(dirname "$0")/aggregate_table1.py" "$out" --label "MetaNTK-NAS ($preset)"
echo "done: $out/table1.md and $out/table1.json; cards with: metantk-zoo card $out/seed1/train --out $out/seed1/card"
