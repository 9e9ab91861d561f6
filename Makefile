# Exsa Engine. `make` builds build/exsa; `make test` installs missing Debian packages (as root),
# builds and runs every test; `make run` starts the server; `make SAN=1 test` under ASan+UBSan.
# The CUDA backend (src/cuda) is built when nvcc is found (CUDA=0 leaves it out, CUDA=1 insists);
# `make test-gpu` runs the GPU tests on a machine with a device.
CC ?= cc
SAN ?=
NVCC ?= $(firstword $(wildcard /usr/local/cuda/bin/nvcc) $(shell command -v nvcc 2>/dev/null))
CUDA ?= $(if $(SAN),0,$(if $(NVCC),1,0))
BUILD := build$(if $(SAN),/san)$(if $(filter 1,$(CUDA)),,$(if $(SAN),,/cpu))
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -Iinclude -Isrc \
               $(shell pkg-config --cflags libcjson 2>/dev/null)
SANFLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
OPT := $(if $(SAN),$(SANFLAGS),-O2 -g)
CFLAGS ?=
ALL_CFLAGS = $(CFLAGS_BASE) $(OPT) $(CFLAGS)
LDLIBS := -lmicrohttpd -lcjson -lpcre2-8 -lpthread -lm
SANLINK := -fsanitize=address,undefined
LDFLAGS_ALL := $(if $(SAN),$(SANLINK)) $(LDFLAGS)

# chromium (headless) runs the browser CORS check of tests/test_server_api.c (DEB_HEADERS: the
# files whose absence means a package is missing, its binary included).
DEB_PKGS := libmicrohttpd-dev libcjson-dev libpcre2-dev libcmocka-dev pkg-config chromium
DEB_HEADERS := /usr/include/microhttpd.h /usr/include/cjson/cJSON.h /usr/include/pcre2.h \
               /usr/bin/chromium

SRC := $(sort $(wildcard src/*.c src/*/*.c))
OBJ := $(SRC:%.c=$(BUILD)/%.o)
TEST_SRC := $(sort $(wildcard tests/test_*.c))
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)

ifeq ($(CUDA),1)
ifeq ($(NVCC),)
$(error CUDA=1 but no nvcc: install the CUDA toolkit in /usr/local/cuda or put nvcc on PATH)
endif
CUDA_HOME := $(patsubst %/bin/nvcc,%,$(NVCC))
CUDA_SRC := $(sort $(wildcard src/cuda/*.cu))
OBJ += $(CUDA_SRC:%.cu=$(BUILD)/%.o)
CFLAGS_BASE += -DEXSA_CUDA
NVFLAGS := -std=c++20 -O3 -g -Iinclude -Isrc -DEXSA_CUDA -Xcompiler -Wall \
           -gencode arch=compute_90,code=[sm_90,compute_90] $(NVCCFLAGS)
LDLIBS += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcudart -lstdc++
TEST_BIN += $(BUILD)/tests/test_cuda
endif

.PHONY: all deps format-deps test test-fast test-gpu run bench fuzz soak loadtest clean format \
        format-check
all: deps $(BUILD)/exsa

# $(call need_debs,TEST,PACKAGES): unless the shell command TEST succeeds, installs the Debian
# PACKAGES (as root), or says which command installs them and fails.
need_debs = if ! ( $(1) ) >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages: $(2)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2)) >/dev/null || exit 1; \
	  else echo "missing packages; run: sudo apt-get install $(2)"; exit 1; fi; \
	fi

deps:
	@$(call need_debs,for h in $(DEB_HEADERS); do [ -f $$h ] || exit 1; done,$(DEB_PKGS))

# clang-format only for format and format-check: building and testing do not need it.
format-deps:
	@$(call need_debs,command -v $(CLANG_FORMAT),clang-format)

# deps is order-only: with make -j the packages are in place before the first compile.
$(BUILD)/%.o: %.c $(wildcard include/*.h src/*.h src/*/*.h) | deps
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/src/cuda/%.o: src/cuda/%.cu $(wildcard include/*.h src/*.h src/cuda/*.h) | deps
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -c $< -o $@

$(BUILD)/tests/test_cuda: tests/gpu/test_cuda.c $(wildcard tests/*.h tests/gpu/*.h) $(BUILD)/libexsa.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests $< $(BUILD)/libexsa.a $(LDFLAGS_ALL) $(LDLIBS) -o $@

$(BUILD)/libexsa.a: $(OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/exsa: $(BUILD)/tools/exsa/main.o $(wildcard tools/exsa/*.c) $(BUILD)/libexsa.a
	$(CC) $(ALL_CFLAGS) $(filter %.c,$(filter-out tools/exsa/main.c,$^)) $(BUILD)/tools/exsa/main.o \
	  $(BUILD)/libexsa.a $(LDFLAGS_ALL) $(LDLIBS) -o $@

$(BUILD)/tests/%: tests/%.c $(wildcard tests/*.h) $(BUILD)/libexsa.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $< $(BUILD)/libexsa.a $(LDFLAGS_ALL) $(LDLIBS) -o $@

test: deps $(BUILD)/exsa $(TEST_BIN)
	@BUILD=$(BUILD) sh tests/run.sh $(TEST_BIN)

# The GPU suite alone (CUDA builds): every CUDA op against the reference op, every fixture,
# partial offload, graphs (tools/device-run.sh memcheck runs it under compute-sanitizer).
test-gpu: deps $(BUILD)/exsa $(BUILD)/tests/test_cuda
	@BUILD=$(BUILD) sh tests/run.sh $(BUILD)/tests/test_cuda

# The fast tests: everything but the model suite (test_model and friends). .ci/run runs them
# again with SAN=1 (AddressSanitizer + UBSan, leaks included).
FAST_TESTS := $(patsubst %,$(BUILD)/tests/test_%,kernels gemm gemv ops quant gguf tokenizer \
                chat sampler gen server server_api server_sched server_tools pcache \
                server_cache)
test-fast: deps $(BUILD)/exsa $(FAST_TESTS)
	@BUILD=$(BUILD) sh tests/run.sh $(FAST_TESTS)

run: deps $(BUILD)/exsa
	@sh tools/run.sh $(BUILD)/exsa

bench: deps $(BUILD)/exsa
	@sh bench/run.sh $(BUILD)/exsa

# libFuzzer (clang): every tests/fuzz_<name>.c is a target, run for FUZZ_SECONDS from the seed
# corpus tests/fuzz/<name>/ (new inputs go to build/fuzz/<name>.corpus; a dictionary
# tests/fuzz/<name>.dict is used when present). The targets link the sources they use from an
# archive of src/ and src/server/ built with the fuzzer's instrumentation; src/cpu stays out.
FUZZ_SECONDS ?= 60
FUZZ_CC ?= clang
FUZZ_BUILD := build/fuzz
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=address,undefined \
               -fno-sanitize-recover=undefined -Iinclude -Isrc -Itests \
               $(shell pkg-config --cflags libcjson 2>/dev/null)
FUZZ_LIB_OBJ := $(patsubst %.c,$(FUZZ_BUILD)/%.o,$(sort $(wildcard src/*.c src/server/*.c)))
FUZZ_NAMES := $(patsubst tests/fuzz_%.c,%,$(sort $(wildcard tests/fuzz_*.c)))
FUZZ_BIN := $(FUZZ_NAMES:%=$(FUZZ_BUILD)/fuzz_%)

$(FUZZ_BUILD)/%.o: %.c $(wildcard include/*.h src/*.h src/*/*.h) | deps
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_BUILD)/libfuzz.a: $(FUZZ_LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: tests/fuzz_%.c $(wildcard tests/*.h) $(FUZZ_BUILD)/libfuzz.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $< $(FUZZ_BUILD)/libfuzz.a $(LDLIBS) -o $@

fuzz: deps $(FUZZ_BIN)
	@sh tests/fuzz.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_NAMES)

# The soak test (bench/soak.c): SOAK_CLIENTS streaming clients for SOAK_SECONDS against the
# tiny fixture model, with client disconnects, bad and oversized bodies, bursts past the queue,
# a slowloris burst and a reload; it fails when a request is lost or something is held at the end.
SOAK_SECONDS ?= 120
SOAK_CLIENTS ?= 16
SOAK_DISCONNECT ?= 0.25
$(BUILD)/bench/soak: bench/soak.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $< $(LDFLAGS_ALL) -lpthread -o $@

# The load generator (bench/loadtest.c) against a running `exsa serve`: build/.../bench/loadtest
# -p PORT -c CLIENTS -t SECONDS [--turns T --user-tokens U --max-tokens M --no-cache]; it prints
# time to first token and per output token (p50/p99), aggregate tokens/s, prompt-cache hits.
$(BUILD)/bench/loadtest: bench/loadtest.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $< $(LDFLAGS_ALL) -lcjson -lpthread -lm -o $@

loadtest: deps $(BUILD)/bench/loadtest

soak: deps $(BUILD)/exsa $(BUILD)/bench/soak
	$(BUILD)/bench/soak --exsa $(BUILD)/exsa -m $(or $(EXSA_FIXTURES),../shared/fixtures)/lfm2-tiny-F32.gguf \
	  -t $(SOAK_SECONDS) -c $(SOAK_CLIENTS) -d $(SOAK_DISCONNECT) --log $(BUILD)/soak-server.log

# The code follows .clang-format: every C file, header and CUDA file git tracks (outside a git
# checkout, those find sees). `make format` rewrites them; `make format-check` (run by .ci/run)
# fails and names each place that differs. Debian 12's clang-format (14) is the reference: other
# versions may place a few things differently.
CLANG_FORMAT ?= clang-format
FORMAT_FILES = $(shell git ls-files '*.c' '*.h' '*.cu' 2>/dev/null || \
                 find include src tests tools bench -name '*.[ch]' -o -name '*.cu')

format: format-deps
	$(CLANG_FORMAT) -i $(FORMAT_FILES)

format-check: format-deps
	@$(CLANG_FORMAT) --dry-run -Werror $(FORMAT_FILES) && echo "format check: $(words $(FORMAT_FILES)) files match .clang-format"

clean:
	rm -rf build
