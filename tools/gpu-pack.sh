#!/bin/sh
# gpu-pack: builds, on the build machine, what a GPU machine call needs and packs it for the
# device tool's `carry`: build-cuda/ (fmbatch and the GPU test binaries, sm_90 only) and
# .gpulib/ (the shared libraries the GPU machine lacks: libarchive, jansson, PCRE2, SQLite,
# OpenBLAS and their own dependencies), plus .gpu-commit (the commit the binaries are built
# at, which tools/gpu-check.sh records). Both folders are git-ignored (.git/info/exclude).
# Usage: tools/gpu-pack.sh   then carry ["build-cuda/fmbatch", "build-cuda/tests/gpu",
# ".gpulib.tar.xz", ".gpu-commit"] (the binaries only: the objects stay here, within the 64
# MiB) and start the command with
#   mkdir -p .gpulib && tar xJf .gpulib.tar.xz -C .gpulib
set -eu
BUILD=${BUILD:-build-cuda}
ARCH=${CUDA_ARCH:--gencode arch=compute_90,code=sm_90}
make BUILD="$BUILD" CUDA=1 CUDA_ARCH="$ARCH" -j"$(nproc)" all >/dev/null
for t in tests/gpu/test_*.c; do
    make BUILD="$BUILD" CUDA=1 CUDA_ARCH="$ARCH" "$BUILD/tests/gpu/$(basename "$t" .c)" >/dev/null
done
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
git rev-parse HEAD >.gpu-commit
git diff --quiet HEAD -- . || echo "+dirty" >>.gpu-commit
grep -qx '/.gpulib.tar.xz' .git/info/exclude 2>/dev/null ||
    printf '/.gpulib/\n/.gpulib.tar.xz\n/.gpu-commit\n' >>.git/info/exclude
du -ch "$BUILD/fmbatch" "$BUILD"/tests/gpu/test_* .gpulib.tar.xz | tail -1
