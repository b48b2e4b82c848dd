#!/bin/bash
# Build the Ascend 310 inference application into ascend310_infer/out/main.
#
#   LITE_HOME=/opt/mindspore-lite-2.10.0-linux-x64 bash ascend310_infer/build.sh        (from any directory)
#
# LITE_HOME:     the unpacked MindSpore Lite cloud-side inference package mindspore-lite-<version>-linux-<x64|aarch64>
#                (CPU/Ascend), from https://www.mindspore.cn/lite/docs/en/master/use/downloads.html; take the version of
#                the MindSpore that exported the model. Its runtime/include holds the C++ headers and runtime/lib
#                libmindspore-lite.so. (The mindspore_lite Python wheel is not enough: it has no libmindspore-lite.so.)
# MS_INFER_API:  lite (default) or legacy: the C++ API of MindSpore's own Ascend 310 package (MindSpore <= 2.1, which
#                reads only MINDIR files exported by those versions); it then uses
#   MINDSPORE_PATH: that installed mindspore package directory (with include/api and lib/libmindspore.so), found
#                   through PYTHON (default python3) when unset.
# MS_CXX11_ABI:  _GLIBCXX_USE_CXX11_ABI for the build; must match gflags' (default: the compiler's for lite, 0 for
#                legacy, the ABI of the ModelZoo 310 apps).
#
# Also writes out/runtime_env.sh, which puts the package's libraries on LD_LIBRARY_PATH for running out/main.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

die() {
    echo "build.sh: $*" >&2
    exit 1
}

lite_download="https://www.mindspore.cn/lite/docs/en/master/use/downloads.html"

command -v cmake >/dev/null || die "cmake not found; install CMake 3.14 or later"

api="${MS_INFER_API:-lite}"
case "$api" in
lite)
    [[ -n "${LITE_HOME:-}" ]] || die "LITE_HOME is not set: download the MindSpore Lite cloud-side inference package mindspore-lite-<version>-linux-<x64|aarch64>.tar.gz (same version as the MindSpore that exported the model) from $lite_download, unpack it and set LITE_HOME to the unpacked directory"
    [[ -d "$LITE_HOME" ]] || die "LITE_HOME=$LITE_HOME is not a directory; set it to the unpacked mindspore-lite-<version>-linux-<arch> package from $lite_download"
    LITE_HOME="$(cd "$LITE_HOME" && pwd)"
    [[ -f "$LITE_HOME/runtime/include/api/model.h" ]] || die "LITE_HOME=$LITE_HOME has no C++ headers (runtime/include/api/model.h): it must be the unpacked MindSpore Lite cloud-side inference package mindspore-lite-<version>-linux-<arch> from $lite_download (not the Python wheel)"
    [[ -f "$LITE_HOME/runtime/lib/libmindspore-lite.so" ]] || die "LITE_HOME=$LITE_HOME has no C++ library (runtime/lib/libmindspore-lite.so): it must be the unpacked MindSpore Lite cloud-side inference package mindspore-lite-<version>-linux-<arch> from $lite_download"
    # The Ascend backend is a plugin next to the library (libascend_kernel_plugin.so in older 2.x releases,
    # libascend_acl_plugin.so / libascend_ge_plugin.so in newer ones); without it only the CPU runs.
    if ! compgen -G "$LITE_HOME/runtime/lib/libascend*plugin*.so" >/dev/null; then
        echo "build.sh: warning: $LITE_HOME/runtime/lib has no Ascend plugin (libascend_*plugin.so): this package may not run models on Ascend; use the cloud-side package for CPU/Ascend" >&2
    fi
    echo "MindSpore Lite: LITE_HOME=$LITE_HOME"
    cmake_args=(-DUSE_LEGACY_MS_API=OFF -DLITE_HOME="$LITE_HOME" -DUSE_CXX11_ABI="${MS_CXX11_ABI:-}")
    ;;
legacy)
    if [[ -z "${MINDSPORE_PATH:-}" ]]; then
        python="${PYTHON:-python3}"
        command -v "$python" >/dev/null || die "$python not found; set PYTHON or MINDSPORE_PATH"
        # find_spec locates the package without importing it (importing needs the whole runtime and is slow).
        MINDSPORE_PATH="$("$python" -c 'import importlib.util as u; s = u.find_spec("mindspore"); print(s.submodule_search_locations[0] if s else "")')"
        [[ -n "$MINDSPORE_PATH" ]] || die "no mindspore package for $python; install MindSpore's Ascend 310 package (2.1 or earlier) or set MINDSPORE_PATH"
    fi
    if [[ ! -f "$MINDSPORE_PATH/include/api/model.h" ]]; then
        die "the mindspore package at $MINDSPORE_PATH has no C++ inference API (include/api/model.h); MindSpore 2.2 and later no longer ship it: build with MindSpore Lite instead (unset MS_INFER_API, set LITE_HOME), or set MINDSPORE_PATH to the mindspore directory of a MindSpore <= 2.1 Ascend 310 package"
    fi
    echo "legacy MindSpore Ascend 310 API: MINDSPORE_PATH=$MINDSPORE_PATH"
    cmake_args=(-DUSE_LEGACY_MS_API=ON -DMINDSPORE_PATH="$MINDSPORE_PATH" -DUSE_CXX11_ABI="${MS_CXX11_ABI:-0}")
    ;;
*)
    die "MS_INFER_API must be lite (MindSpore Lite, the default) or legacy (MindSpore <= 2.1 Ascend 310 package), not '$api'"
    ;;
esac

cmake -S . -B out "${cmake_args[@]}" || die "cmake could not configure the build (its message is above)"
if ! cmake --build out --parallel; then
    die "build failed; if the link reports undefined gflags or std::__cxx11 symbols, gflags and the app use different C++ ABIs: build with MS_CXX11_ABI=0 or MS_CXX11_ABI=1 to match gflags"
fi
echo "built $here/out/main ($api API); out/runtime_env.sh sets its LD_LIBRARY_PATH"
