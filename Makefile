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

DEB_PKGS := libmicrohttpd-dev libcjson-dev libpcre2-dev libcmocka-dev pkg-config
DEB_HEADERS := /usr/include/microhttpd.h /usr/include/cjson/cJSON.h /usr/include/pcre2.h

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

.PHONY: all deps test test-gpu run bench fuzz clean format
all: deps $(BUILD)/exsa

deps:
	@missing=""; for h in $(DEB_HEADERS); do [ -f $$h ] || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages: $(DEB_PKGS)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEB_PKGS)) >/dev/null || exit 1; \
	  else echo "missing packages; run: sudo apt-get install $(DEB_PKGS)"; exit 1; fi; \
	fi

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

# The GPU suite alone (CUDA builds): every CUDA op against the reference op, every fixture, partial
# offload; EXSA_GPU_SANITIZE=1 runs it under compute-sanitizer memcheck.
test-gpu: deps $(BUILD)/exsa $(BUILD)/tests/test_cuda
	@BUILD=$(BUILD) sh tests/run.sh $(BUILD)/tests/test_cuda

run: deps $(BUILD)/exsa
	@sh tools/run.sh $(BUILD)/exsa

bench: deps $(BUILD)/exsa
	@sh bench/run.sh $(BUILD)/exsa

# libFuzzer over the GGUF reader (needs clang): FUZZ_SECONDS of fuzzing, corpus in build/fuzz.
FUZZ_SECONDS ?= 60
fuzz:
	@mkdir -p build/fuzz/corpus
	clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Isrc \
	  tests/fuzz_gguf.c src/gguf.c src/quant.c -o build/fuzz/fuzz_gguf
	build/fuzz/fuzz_gguf -max_len=4096 -max_total_time=$(FUZZ_SECONDS) build/fuzz/corpus

format:
	clang-format -i $(SRC) $(wildcard src/*.h src/*/*.h include/*.h tools/exsa/*.c tests/*.c tests/*.h)

clean:
	rm -rf build
