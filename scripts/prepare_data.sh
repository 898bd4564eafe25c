#!/usr/bin/env bash
# Prepare the few-shot benchmarks as local parquet datasets that every metantk-zoo command reads.
#
#   scripts/prepare_data.sh mini   /path/to/rfs/miniImageNet   data/mini-imagenet
#   scripts/prepare_data.sh tiered /path/to/rfs/tieredImageNet data/tiered-imagenet
#   scripts/prepare_data.sh imagenet-tiered /path/to/imagenet/train data/tiered-imagenet
#
# `mini` / `tiered` read the RFS / MetaOptNet pickle and npz files (with a restricted unpickler: arrays only);
# `imagenet-tiered` builds tiered-ImageNet (351/97/160 classes) from an ImageNet-1k class-folder tree.
# Hub datasets need no preparation: pass e.g. GATE-engine/mini_imagenet as the dataset spec directly.
set -euo pipefail
kind=${1:?usage: $0 mini|tiered|imagenet-tiered SOURCE OUT}
src=${2:?SOURCE missing}
out=${3:?OUT missing}
case "$kind" in
  mini|tiered|imagenet-tiered) ;;
  *) echo "unknown kind '$kind': expected mini, tiered or imagenet-tiered" >&2; exit 2 ;;
esac
metantk-zoo data prepare "$src" --out "$out"
metantk-zoo data info "$out"
metantk-zoo data verify "$out"
