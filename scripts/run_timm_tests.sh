#!/usr/bin/env bash
# Run timm's own model tests (tests/test_models.py of the INSTALLED timm version) on every metantk entry.
#
#   scripts/run_timm_tests.sh [PYTHON] [extra pytest args...]      # PYTHON defaults to .venv/bin/python
#
# timm has no plugin mechanism, so its test suite only sees the zoo once `import metantk_zoo` has run: this
# script fetches the sdist of exactly the installed timm version from the package registry (`pip download`,
# the only network access; TIMM_SDIST=/path/to/timm-X.tar.gz uses a local copy instead), extracts its tests/
# and pyproject.toml (pytest markers) into a temporary folder, prepends `import metantk_zoo` to its
# conftest.py and runs `pytest tests/test_models.py -k metantk` there, as timm's maintainers would. Nothing is
# deselected beyond `-k metantk`; skips are timm's own (input-size limits, missing torchvision FX).
# TORCH_DEVICE (timm's variable) picks the device, cpu by default. The exit status is pytest's.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="${1:-$root/.venv/bin/python}"
shift || true
py="$(cd "$(dirname "$py")" && pwd)/$(basename "$py")"

version="$("$py" -c 'import timm; print(timm.__version__)')"
work="$(mktemp -d "${TMPDIR:-/tmp}/timm-tests.XXXXXX")"
trap 'rm -rf "$work"' EXIT

if [[ -n "${TIMM_SDIST:-}" ]]; then
  sdist="$TIMM_SDIST"
else
  "$py" -m pip download -q --no-deps --no-binary :all: "timm==$version" -d "$work/dl" >&2
  sdist="$(ls "$work"/dl/timm-*.tar.gz)"
fi
tar -xzf "$sdist" -C "$work" "timm-$version/tests" "timm-$version/pyproject.toml"
src="$work/timm-$version"
{ echo "import metantk_zoo  # noqa: F401  (added by metantk-zoo: registers the metantk_* models in timm)"
  cat "$src/tests/conftest.py"; } > "$src/tests/conftest.new"
mv "$src/tests/conftest.new" "$src/tests/conftest.py"

echo "timm $version tests from $(basename "$sdist"), run in $src" >&2
cd "$src"
# -p no:cacheprovider: nothing written outside the temp dir; the installed timm is imported (no timm/ here).
"$py" -m pytest tests/test_models.py -k metantk -p no:cacheprovider -q -rs -W ignore::pytest.PytestUnknownMarkWarning "$@"
