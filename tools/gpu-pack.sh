#!/bin/sh
# gpu-pack: builds, on the build machine, what a GPU machine call needs and packs it for the
# device tool's `carry`: build-cuda/ (fmbatch and the GPU test binaries, sm_90 only) and
# .gpulib/ (the shared libraries the GPU machine lacks: libarchive, jansson, PCRE2, SQLite,
# OpenBLAS and their own dependencies), plus .gpu-commit (the commit the binaries are built
# at, which tools/gpu-check.sh records). Both folders are git-ignored (.git/info/exclude).
# SM80=1 also builds build-sm80/ with only compute_80 PTX (fmbatch and the GPU tests: what the
# 24 GB cards, sm_86/sm_89, run; tools/gpu-check.sh tests it under their shared-memory cap).
# The binaries of both go, stripped, into .gpubin.tar.xz (a few MB: carry it instead of them).
# Usage: [SM80=1] tools/gpu-pack.sh   then carry [".gpubin.tar.xz", ".gpulib.tar.xz",
# ".gpu-commit"] (the objects stay here: the tree and the carry fit the 64 MiB) and start the
# command with
#   tar xJf .gpubin.tar.xz && mkdir -p .gpulib && tar xJf .gpulib.tar.xz -C .gpulib
# NAME=x (a branch's worktree, for tools/gpu-compare.sh): the same build, packed as build-x/
# (with build-x/.commit) into .gpubin-x.tar.xz alone: no sm80 build, no libraries (main's serve).
set -eu
if [ -n "${NAME:-}" ] && [ -n "${SM80:-}" ]; then
    echo "gpu-pack: NAME and SM80 do not go together" >&2
    exit 2
fi
BUILD=${BUILD:-build-cuda}
ARCH=${CUDA_ARCH:--gencode arch=compute_90,code=sm_90}
make BUILD="$BUILD" CUDA=1 CUDA_ARCH="$ARCH" -j"$(nproc)" all >/dev/null
for t in tests/gpu/test_*.c; do
    make BUILD="$BUILD" CUDA=1 CUDA_ARCH="$ARCH" "$BUILD/tests/gpu/$(basename "$t" .c)" >/dev/null
done
bins="$BUILD/fmbatch $BUILD/tests/gpu/test_engine_batch $BUILD/tests/gpu/test_engine_cuda $BUILD/tests/gpu/test_kernels"
if [ -n "${SM80:-}" ]; then
    A80="-gencode arch=compute_80,code=compute_80"
    make BUILD=build-sm80 CUDA=1 CUDA_ARCH="$A80" -j"$(nproc)" all >/dev/null
    for t in tests/gpu/test_*.c; do
        make BUILD=build-sm80 CUDA=1 CUDA_ARCH="$A80" "build-sm80/tests/gpu/$(basename "$t" .c)" >/dev/null
    done
    bins="$bins build-sm80/fmbatch build-sm80/tests/gpu/test_engine_batch build-sm80/tests/gpu/test_engine_cuda build-sm80/tests/gpu/test_kernels"
fi
rm -rf .gpubin
mkdir -p .gpubin
for b in $bins; do # stripped copies: the build folders keep their symbols
    d=$b
    [ -n "${NAME:-}" ] && d="build-$NAME/${b#"$BUILD"/}"
    mkdir -p ".gpubin/$(dirname "$d")"
    strip -o ".gpubin/$d" "$b"
done
X=$(git rev-parse --git-path info/exclude) # .git/info/exclude, also from a worktree
commit=$(git rev-parse HEAD)$(git diff --quiet HEAD -- . || echo "+dirty")
if [ -n "${NAME:-}" ]; then
    echo "$commit" >".gpubin/build-$NAME/.commit"
    tar cJf ".gpubin-$NAME.tar.xz" -C .gpubin .
    rm -rf .gpubin
    grep -qx '/.gpubin-\*.tar.xz' "$X" 2>/dev/null || echo '/.gpubin-*.tar.xz' >>"$X"
    du -h ".gpubin-$NAME.tar.xz"
    exit 0
fi
tar cJf .gpubin.tar.xz -C .gpubin .
rm -rf .gpubin
rm -rf .gpulib
mkdir -p .gpulib
# every library the binary links that is not part of the C runtime or the CUDA driver
ldd "$BUILD/fmbatch" | awk '$3 ~ /^\// {print $3}' | while read -r lib; do
    case $(basename "$lib") in
    libc.so* | libm.so* | libpthread.so* | libdl.so* | librt.so* | ld-linux*) ;;
    libcuda.so* | libnvidia* | libcublas* | libcudart*) ;; # the GPU machine's CUDA has these
    *) cp -L "$lib" .gpulib/ ;;
    esac
done
# compressed: OpenBLAS and ICU alone are over half the 64 MiB a call may carry
tar cJf .gpulib.tar.xz -C .gpulib .
rm -rf .gpulib
echo "$commit" >.gpu-commit
grep -qx '/.gpulib.tar.xz' "$X" 2>/dev/null ||
    printf '/.gpulib/\n/.gpulib.tar.xz\n/.gpu-commit\n' >>"$X"
grep -qx '/.gpubin.tar.xz' "$X" 2>/dev/null || echo /.gpubin.tar.xz >>"$X"
du -ch .gpubin.tar.xz .gpulib.tar.xz | tail -1
