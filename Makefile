# Exsa Engine. `make` builds build/exsa; `make test` installs missing Debian packages (as root),
# builds and runs every test; `make run` starts the server; `make SAN=1 test` under ASan+UBSan.
CC ?= cc
SAN ?=
BUILD := build$(if $(SAN),/san)
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -Iinclude -Isrc \
               $(shell pkg-config --cflags libcjson 2>/dev/null)
SANFLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
OPT := $(if $(SAN),$(SANFLAGS),-O2 -g)
CFLAGS ?=
ALL_CFLAGS := $(CFLAGS_BASE) $(OPT) $(CFLAGS)
LDLIBS := -lmicrohttpd -lcjson -lpcre2-8 -lpthread -lm
SANLINK := -fsanitize=address,undefined
LDFLAGS_ALL := $(if $(SAN),$(SANLINK)) $(LDFLAGS)

DEB_PKGS := libmicrohttpd-dev libcjson-dev libpcre2-dev libcmocka-dev pkg-config
DEB_HEADERS := /usr/include/microhttpd.h /usr/include/cjson/cJSON.h /usr/include/pcre2.h

SRC := $(sort $(wildcard src/*.c src/*/*.c))
OBJ := $(SRC:%.c=$(BUILD)/%.o)
TEST_SRC := $(sort $(wildcard tests/test_*.c))
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)

.PHONY: all deps test run bench fuzz clean format
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

run: deps $(BUILD)/exsa
	@sh tools/run.sh $(BUILD)/exsa

bench: deps $(BUILD)/exsa
	@sh bench/run.sh $(BUILD)/exsa

# libFuzzer targets (need clang): `make fuzz FUZZ=name` builds tests/fuzz_<name>.c and fuzzes it
# for FUZZ_SECONDS, corpus in build/fuzz/corpus-<name>, seeds from tests/fuzz/<name>/ if any.
FUZZ ?= gguf
FUZZ_SECONDS ?= 60
FUZZ_SRC_gguf := src/gguf.c src/quant.c
FUZZ_SRC_toolcall := src/toolcall.c src/reasoning.c src/strbuf.c
FUZZ_SRC_jsonschema := src/jsonschema.c src/grammar.c src/strbuf.c
fuzz:
	@mkdir -p build/fuzz/corpus-$(FUZZ)
	clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Isrc -Itests \
	  $(shell pkg-config --cflags libcjson 2>/dev/null) tests/fuzz_$(FUZZ).c $(FUZZ_SRC_$(FUZZ)) \
	  -lcjson -lm -o build/fuzz/fuzz_$(FUZZ)
	build/fuzz/fuzz_$(FUZZ) -max_len=4096 -max_total_time=$(FUZZ_SECONDS) \
	  build/fuzz/corpus-$(FUZZ) $(wildcard tests/fuzz/$(FUZZ))

format:
	clang-format -i $(SRC) $(wildcard src/*.h src/*/*.h include/*.h tools/exsa/*.c tests/*.c tests/*.h)

clean:
	rm -rf build
