# fmbatch: one non-recursive Makefile.
#
#   make demo            install the missing Debian packages (tools/deps.sh), build the CPU engine
#                        (build-nocuda/, no nvcc), run the demo jobs in jobs/demo/ and show results
#   make                 build ./fmbatch (with the CUDA backend when nvcc is found, in build/; CUDA=0
#                        builds without it, in build-nocuda/)
#   make test            the packages the tests need (+ HF tokenizers from PyPI, in $(BUILD)/venv when
#                        pip refuses the system python), then every test that needs no GPU; last
#                        line "N passed, N failed"
#   make install [PREFIX=/usr/local] [DESTDIR=]   bin/fmbatch and share/doc/fmbatch; make uninstall
#   make test SANITIZER=address,undefined   the same tests under ASan+UBSan (build-san/, no CUDA)
#   make test-gpu        build and run the GPU tests (needs a GPU)
#   make format | format-check | lint | clean
#
# Modules are found by wildcard: a new engine/foo.c needs no edit here.

CC   ?= gcc
CXX  ?= g++
NVCC ?= nvcc

SANITIZER ?=
ifneq ($(SANITIZER),)
CUDA := 0
endif

# CUDA=auto: build the CUDA backend when nvcc is on PATH (or at /usr/local/cuda).
CUDA ?= auto
ifeq ($(CUDA),auto)
  NVCC_PATH := $(shell command -v $(NVCC) 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
  ifneq ($(NVCC_PATH),)
    CUDA := 1
    NVCC := $(NVCC_PATH)
  else
    CUDA := 0
  endif
endif

# One build folder per configuration, so that `make CUDA=0` after `make` (or the reverse)
# rebuilds instead of linking objects of the other kind: build/ (CUDA), build-nocuda/,
# build-san/ (sanitizers, no CUDA). The default ones also copy the binary to ./fmbatch.
ifneq ($(SANITIZER),)
DEFAULT_BUILD := build-san
else ifeq ($(CUDA),1)
DEFAULT_BUILD := build
else
DEFAULT_BUILD := build-nocuda
endif
BUILD ?= $(DEFAULT_BUILD)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
# sm_80/86/89: the 24 GB cards users have (A10, 3090, 4090, L4); sm_90: H100/H200; plus PTX.
CUDA_ARCH ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_86,code=sm_86 \
             -gencode arch=compute_89,code=sm_89 -gencode arch=compute_90,code=sm_90 \
             -gencode arch=compute_90,code=compute_90

WARN     = -Wall -Wextra -Wshadow -Wvla -Werror=implicit-function-declaration
CFLAGS  ?= -O2 -g
# -fno-trapping-math changes no result (fmbatch never enables FP traps); it lets GCC if-convert
# float selects so loops such as the CPU scan's exp vectorise. No -ffast-math anywhere.
CFLAGS  += -std=c11 $(WARN) -Wstrict-prototypes -Wmissing-prototypes -D_GNU_SOURCE -I. -fopenmp \
           -fno-trapping-math -MMD -MP
CXXFLAGS ?= -O2 -g
CXXFLAGS += -std=c++17 -Wall -Wextra -Wshadow -I. -MMD -MP
NVCCFLAGS ?= -O3 -lineinfo
NVCCFLAGS += -std=c++17 -I. $(CUDA_ARCH) -Xcompiler -Wall -MMD -MP
LDLIBS   = -lopenblas -ljansson -lpcre2-8 -lm -lpthread -fopenmp
BATCH_LDLIBS = -lsqlite3 -larchive -lz -lstdc++

ifneq ($(SANITIZER),)
  CFLAGS   += -fsanitize=$(SANITIZER) -fno-sanitize-recover=all -fno-omit-frame-pointer
  CXXFLAGS += -fsanitize=$(SANITIZER) -fno-sanitize-recover=all -fno-omit-frame-pointer
  LDFLAGS  += -fsanitize=$(SANITIZER)
endif

KERNEL_C  := $(wildcard kernels/*.c kernels/cpu/*.c)
KERNEL_CU := $(wildcard kernels/*.cu)
ENGINE_C  := $(wildcard engine/*.c)
BATCH_C   := $(filter-out batch/cli/main.c,$(wildcard batch/*.c batch/cli/*.c))
BATCH_CXX := $(wildcard batch/*.cc)
TEST_C    := $(wildcard tests/test_*.c)
FUZZ_C    := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_NAMES := $(FUZZ_C:tests/fuzz/fuzz_%.c=%)
GPU_TEST_C := $(wildcard tests/gpu/test_*.c)

ifeq ($(CUDA),1)
  CFLAGS  += -DFMB_HAVE_CUDA=1 -I$(CUDA_HOME)/include
  LDLIBS  += -L$(CUDA_HOME)/lib64 -lcudart_static -ldl -lrt -lstdc++
  KERNEL_OBJ_CU := $(KERNEL_CU:%.cu=$(BUILD)/%.o)
else
  KERNEL_OBJ_CU :=
endif

ENGINE_OBJ := $(KERNEL_C:%.c=$(BUILD)/%.o) $(KERNEL_OBJ_CU) $(ENGINE_C:%.c=$(BUILD)/%.o)
BATCH_OBJ  := $(BATCH_C:%.c=$(BUILD)/%.o) $(BATCH_CXX:%.cc=$(BUILD)/%.o)
ENGINE_LIB := $(BUILD)/libfmb_engine.a
BATCH_LIB  := $(BUILD)/libfmb_batch.a
TEST_BIN   := $(TEST_C:tests/%.c=$(BUILD)/tests/%)
# each fuzz target also as a plain test binary: tests/fuzz/replay.c's main replays its saved
# crash inputs and seeds (make test, any compiler)
REPLAY_BIN := $(FUZZ_NAMES:%=$(BUILD)/tests/test_fuzz_%)
GPU_TEST_BIN := $(GPU_TEST_C:tests/gpu/%.c=$(BUILD)/tests/gpu/%)

# The binary is built in $(BUILD)/; the default build also copies it to ./fmbatch.
FMBATCH := $(BUILD)/fmbatch

.PHONY: all test check test-run test-gpu demo install uninstall format format-check lint clean \
        fuzz fuzz-bins fuzz-smoke tsan-smoke
# Keep test objects: make would otherwise delete them after the runner's last line.
.SECONDARY:
ifneq ($(filter $(BUILD),build build-nocuda),)
all: fmbatch
# phony: ./fmbatch follows the configuration built last, whichever binary is newer
.PHONY: fmbatch
fmbatch: $(FMBATCH)
	@cmp -s $< $@ || cp $< $@
else
all: $(FMBATCH)
endif

$(FMBATCH): $(BUILD)/batch/cli/main.o $(BATCH_LIB) $(ENGINE_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(BATCH_LDLIBS) $(LDLIBS)

$(ENGINE_LIB): $(ENGINE_OBJ)
	@rm -f $@
	ar rcs $@ $^
$(BATCH_LIB): $(BATCH_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<
$(BUILD)/%.o: %.cc
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -c -o $@ $<
$(BUILD)/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c -o $@ $<

TEST_HARNESS = $(BUILD)/tests/check.o $(BUILD)/tests/fixture.o
$(BUILD)/tests/%: $(BUILD)/tests/%.o $(TEST_HARNESS) $(BATCH_LIB) $(ENGINE_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(BATCH_LDLIBS) $(LDLIBS)
$(BUILD)/tests/test_fuzz_%: $(BUILD)/tests/fuzz/fuzz_%.o $(BUILD)/tests/fuzz/replay.o $(TEST_HARNESS) $(BATCH_LIB) $(ENGINE_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(BATCH_LDLIBS) $(LDLIBS)
$(BUILD)/tests/gpu/%: $(BUILD)/tests/gpu/%.o $(TEST_HARNESS) $(ENGINE_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Every CPU test binary and every tests/sh/*.sh script; the runner prints "N passed, N failed".
# First the Debian packages (tools/deps.sh, the one list), before anything compiles, hence the
# second make; then a python that imports HF tokenizers for the differential tokenizer test
# (python3's, or one installed once into $(BUILD)/venv; nothing is downloaded when it is there).
test check:
	@tools/deps.sh test
	@$(MAKE) --no-print-directory test-run
test-run: $(FMBATCH) $(TEST_BIN) $(REPLAY_BIN)
	@FMB_PYTHON="$$(tools/deps.sh python $(abspath $(BUILD))/venv)" \
	    FMBATCH=$(abspath $(FMBATCH)) tests/run.sh $(BUILD)/tests

# The first run: packages, the CPU engine only (no nvcc on the way to the first result; BUILD=
# on the command line picks another folder), then the demo jobs (tools/demo.sh; a second run
# resumes and does nothing).
DEMO_BUILD := $(if $(filter command line,$(origin BUILD)),$(BUILD),$(if $(SANITIZER),build-san,build-nocuda))
demo:
	@tools/deps.sh build
	@$(MAKE) --no-print-directory CUDA=0 BUILD=$(DEMO_BUILD) all
	@tools/demo.sh $(DEMO_BUILD)/fmbatch

# make install [PREFIX=/usr/local] [DESTDIR=staging]: the binary of this configuration
# ($(FMBATCH); INSTALL_BIN= another one) and the documentation.
PREFIX ?= /usr/local
DESTDIR ?=
INSTALL_BIN ?= $(FMBATCH)
DOC_FILES = README.md docs/ARCHITECTURE.md docs/DECISIONS.md docs/JOBS.md docs/NUMERICS.md
install: $(INSTALL_BIN)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/doc/fmbatch
	install -m 755 $(INSTALL_BIN) $(DESTDIR)$(PREFIX)/bin/fmbatch
	install -m 644 $(wildcard $(DOC_FILES)) $(DESTDIR)$(PREFIX)/share/doc/fmbatch/
uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/fmbatch
	rm -rf $(DESTDIR)$(PREFIX)/share/doc/fmbatch

test-gpu: $(FMBATCH) $(GPU_TEST_BIN)
	@FMBATCH=$(abspath $(FMBATCH)) tests/run.sh $(BUILD)/tests/gpu --no-scripts

# Fuzzing (libFuzzer + ASan + UBSan, clang): `make fuzz` builds every tests/fuzz/fuzz_*.c as
# build-fuzz/fuzz/fuzz_NAME, the libraries instrumented (-fsanitize=fuzzer-no-link; linked by
# clang++ for UBSan's C++ checks in batch/toml.cc); `make
# fuzz-smoke` runs each for FUZZ_TIME seconds (10) from its seeds tests/fuzz/corpus_NAME and
# prints its executions and coverage (tools/fuzz.sh; a crash fails it and leaves the input in
# build-fuzz/crashes/NAME/: copy it to tests/fuzz/crashes/NAME/ with the fix, make test replays it).
FUZZ_CC ?= clang
FUZZ_CXX ?= clang++
FUZZ_BUILD ?= build-fuzz
FUZZ_TIME ?= 10
fuzz:
	@$(MAKE) --no-print-directory CC=$(FUZZ_CC) CXX=$(FUZZ_CXX) CUDA=0 BUILD=$(FUZZ_BUILD) \
	    SANITIZER=fuzzer-no-link,address,undefined fuzz-bins
fuzz-bins: $(FUZZ_NAMES:%=$(BUILD)/fuzz/fuzz_%)
$(BUILD)/fuzz/fuzz_%: $(BUILD)/tests/fuzz/fuzz_%.o $(TEST_HARNESS) $(BATCH_LIB) $(ENGINE_LIB)
	@mkdir -p $(dir $@)
	$(CXX) $(LDFLAGS) -fsanitize=fuzzer -o $@ $^ $(BATCH_LDLIBS) $(LDLIBS)
fuzz-smoke: fuzz
	@tools/fuzz.sh $(FUZZ_BUILD) $(FUZZ_TIME) $(FUZZ_NAMES)

# ThreadSanitizer (gcc): `make tsan-smoke` builds fmbatch in build-tsan/ with
# -fsanitize=thread and runs the end-to-end scripts that drive its threads (the pipelined
# runner, SIGINT, several workers, shards) under it (tools/tsan.sh; tests/tsan.supp holds the
# suppressions and their reasons); a report or a FAIL fails it.
TSAN_BUILD ?= build-tsan
TSAN_SCRIPTS ?= batch_e2e devices shards gen_controls batch_sources
tsan-smoke:
	@$(MAKE) --no-print-directory CUDA=0 BUILD=$(TSAN_BUILD) SANITIZER=thread $(TSAN_BUILD)/fmbatch
	@tools/tsan.sh $(abspath $(TSAN_BUILD))/fmbatch $(TSAN_SCRIPTS)

SRC_ALL = $(shell git ls-files '*.c' '*.h' '*.cu' '*.cuh' '*.cc' 2>/dev/null)
format:
	clang-format -i $(SRC_ALL)
format-check:
	clang-format --dry-run --Werror $(SRC_ALL)

# lint: layering, then cppcheck (fails on any finding; .cppcheck-suppressions gives each
# suppression its reason).
# Layering: kernels/ includes no engine/ or batch/ header; engine/ no batch/ header and none of
# sqlite3, archive or toml; batch/ (batch/cli/ too) includes engine/ headers and kernels/base.h
# only, except a line marked "lint: allow (why)"; only the queue module (batch/queue*.c) and the
# sqlite source use SQLite.
LINT_BATCH = $(wildcard batch/*.[ch] batch/*.cc batch/cli/*.[ch])
CPPCHECK ?= cppcheck
lint:
	@! grep -nE '#include "(engine|batch)/' kernels/*.[ch] kernels/cpu/*.[ch] kernels/*.cu kernels/*.cuh 2>/dev/null
	@! grep -nE '#include (["<]batch/|<sqlite3.h>|<archive|<toml)' engine/*.[ch] 2>/dev/null
	@! grep -nE '#include "kernels/' $(LINT_BATCH) | grep -v '"kernels/base.h"' | grep -v 'lint: allow ('
	@! grep -nE '#include <sqlite3.h>' $(filter-out batch/queue.c batch/queue_impl.h batch/queue_results.c batch/queue_report.c batch/queue_items.c batch/queue_fault.c batch/source_sqlite.c,$(LINT_BATCH))
	@echo "lint: layering ok"
	@command -v $(CPPCHECK) >/dev/null || { echo "lint: cppcheck not found (apt-get install -y cppcheck)"; exit 1; }
	@$(CPPCHECK) --quiet --error-exitcode=1 --std=c11 --language=c -I. -D_GNU_SOURCE \
	    --enable=warning,portability --inline-suppr --suppressions-list=.cppcheck-suppressions \
	    $(KERNEL_C) $(ENGINE_C) $(wildcard batch/*.c batch/cli/*.c)
	@echo "lint: cppcheck ok"

clean:
	rm -rf build build-nocuda build-san build-fuzz build-tsan fmbatch

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
