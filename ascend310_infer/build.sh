#!/bin/bash
# Build the Ascend 310 inference application into ascend310_infer/out/main.
#
#   bash ascend310_infer/build.sh        (from any directory)
#
# MINDSPORE_PATH: the installed mindspore package directory (with include/api and lib/libmindspore.so);
#                 found through Python when unset.
# PYTHON:         the interpreter used to find it (default python3).
# MS_CXX11_ABI:   _GLIBCXX_USE_CXX11_ABI for the build (default 0, the ABI of MindSpore's Ascend packages).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

die() {
    echo "build.sh: $*" >&2
    exit 1
}

command -v cmake >/dev/null || die "cmake not found; install CMake 3.14 or later"

if [[ -z "${MINDSPORE_PATH:-}" ]]; then
    python="${PYTHON:-python3}"
    command -v "$python" >/dev/null || die "$python not found; set PYTHON or MINDSPORE_PATH"
    # find_spec locates the package without importing it (importing needs the whole runtime and is slow).
    MINDSPORE_PATH="$("$python" -c 'import importlib.util as u; s = u.find_spec("mindspore"); print(s.submodule_search_locations[0] if s else "")')"
    [[ -n "$MINDSPORE_PATH" ]] || die "no mindspore package for $python; install MindSpore's Ascend 310 package or set MINDSPORE_PATH"
fi
if [[ ! -f "$MINDSPORE_PATH/include/api/model.h" ]]; then
    die "the mindspore package at $MINDSPORE_PATH has no C++ inference API (include/api/model.h); MindSpore 2.2 and later no longer ship it: install a MindSpore 1.x Ascend 310 package and set MINDSPORE_PATH to its mindspore directory"
fi
echo "MINDSPORE_PATH=$MINDSPORE_PATH"

cmake -S . -B out -DMINDSPORE_PATH="$MINDSPORE_PATH" -DUSE_CXX11_ABI="${MS_CXX11_ABI:-0}"
if ! cmake --build out --parallel; then
    die "build failed; if the link reports undefined gflags or std::__cxx11 symbols, gflags and MindSpore use different C++ ABIs: rebuild gflags with -D_GLIBCXX_USE_CXX11_ABI=0, or build with MS_CXX11_ABI=1"
fi
echo "built $here/out/main"
