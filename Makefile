# shade — build, test, demo, bench.  `make` builds bin/shade; `make check` runs
# every test (normal build, then ASan+UBSan build); `make demo` runs the demo.
CC       ?= cc
VERSION  := 0.1.0

# BUILD selects the flavour: build/ (release) or build/asan (sanitizers)
ifeq ($(SAN),1)
  B   := build/asan
  EXTRA_CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  BIN := bin/shade-asan
else
  B   := build/rel
  BIN := bin/shade
endif

WARN     := -Wall -Wextra -Werror -Wshadow -Wpointer-arith -Wstrict-prototypes \
            -Wmissing-prototypes -Wformat=2 -Wvla -Wno-unused-parameter
CFLAGS   ?= -O2 -g
# src/ has one folder per subsystem (doc/architecture.md); basenames are
# unique, so every folder is on the include path and objects are flat
SRC_DIRS := src src/core src/http src/gateway src/shadow src/eval src/obs src/sim
ALL_CFLAGS := -std=c17 -D_GNU_SOURCE -DSHADE_VERSION=\"$(VERSION)\" $(SRC_DIRS:%=-I%) \
            -pthread -fno-strict-aliasing $(WARN) $(CFLAGS) $(EXTRA_CFLAGS)
LDLIBS   := -pthread -lyaml -lsqlite3 -lssl -lcrypto -lm

SRCS     := $(foreach d,$(SRC_DIRS),$(wildcard $(d)/*.c))
HDRS     := $(foreach d,$(SRC_DIRS),$(wildcard $(d)/*.h))
OBJS     := $(patsubst %.c,$(B)/%.o,$(notdir $(SRCS)))
vpath %.c $(SRC_DIRS)
LIB_OBJS := $(filter-out $(B)/main.o,$(OBJS))
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(B)/tests/%)

.PHONY: bench-limits all deps check check-depgraph check-unit check-bb check-sdk demo bench bench-balance bench-shadow bench-compare bench-decisions bench-rollouts fuzz clean format
all: $(BIN)

$(BIN): $(OBJS)
	@mkdir -p bin
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDLIBS)

$(B)/%.o: %.c $(HDRS)
	@mkdir -p $(B)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(B)/tests/%: tests/unit/%.c $(LIB_OBJS) tests/unit/unit.h tests/unit/loopback.h
	@mkdir -p $(B)/tests
	$(CC) $(ALL_CFLAGS) -Itests/unit -o $@ $< $(LIB_OBJS) $(LDLIBS)

deps:
	@scripts/deps.sh

# each suite appends its summary line here; `make check` prints them at the end
SUMMARY := build/check-summary.txt

check-unit: $(UNIT_BINS)
	@set -e; mkdir -p build; for t in $(UNIT_BINS); do echo "== $$t"; $$t > build/unit.out; \
	  cat build/unit.out; cat build/unit.out >> $(SUMMARY).units; done
	@mkdir -p build; n=$$(grep -c ', 0 failed' $(SUMMARY).units); c=$$(awk '{s+=$$2} END {print s}' $(SUMMARY).units); \
	  echo "unit ($(notdir $(BIN))): $$n programs, $$c checks, 0 failed" >> $(SUMMARY); rm -f $(SUMMARY).units

# the module graph of src/ must stay a DAG: no two modules include each
# other, directly or around a loop (doc/architecture.md)
check-depgraph:
	@mkdir -p build; scripts/depgraph.py --summary $(SUMMARY)

check-bb: $(BIN)
	@mkdir -p build; SHADE_BIN=$(BIN) SHADE_SUMMARY=$(SUMMARY) python3 tests/bb/run.py

# the whole suite: release build, then again under ASan + UBSan
check: deps
	@mkdir -p build; rm -f $(SUMMARY) $(SUMMARY).units
	@$(MAKE) --no-print-directory check-depgraph
	@$(MAKE) --no-print-directory all check-unit check-bb check-sdk
	@$(MAKE) --no-print-directory SAN=1 all check-unit check-bb check-sdk
	@# benchmark programs are built (not run) so they cannot silently rot
	@$(MAKE) --no-print-directory $(B)/bench/compare_bench
	@fuzz/run.sh $(FUZZ_SECONDS) >build/fuzz.log 2>&1 || { tail -40 build/fuzz.log; exit 1; }
	@tail -1 build/fuzz.log | sed 's/^fuzz\/run.sh: /fuzz: /' >> $(SUMMARY)
	@echo; echo "== summary"; cat $(SUMMARY)
	@echo "check: all suites passed"

FUZZ_SECONDS ?= 10

check-sdk: $(BIN)
	@mkdir -p build; rc=0; SHADE_BIN=$(BIN) tests/sdk/run.sh > build/sdk.log 2>&1 || rc=$$?; \
	  cat build/sdk.log; exit $$rc
	@echo "sdk ($(notdir $(BIN))): $$(awk 'NF >= 2 && $$(NF-1) == "pass" {print $$NF}' build/sdk.log) passed, 0 failed" >> $(SUMMARY)

demo: deps
	@$(MAKE) --no-print-directory all
	@scripts/demo.sh

bench: deps
	@$(MAKE) --no-print-directory all
	@bench/run.sh
	@echo; echo "== what a key and its limits cost (bench/limits.sh; make bench-limits adds the exactness run)"
	@bench/limits.sh

# balancing strategies with one backend three times slower (doc/routing.md)
bench-balance: deps
	@$(MAKE) --no-print-directory all
	@bench/balance.sh

# the user's latency with shadowing off, on, and on with a hung shadow (doc/shadow.md)
bench-shadow: deps
	@$(MAKE) --no-print-directory all
	@bench/shadow.sh

# the pair-store writer's CPU per pair: comparisons (old DP vs bit-parallel)
# and SQLite, with 1,500- and 4,000-token answers; then the serving process's
# CPU per shadowed request end to end (doc/benchmarks.md)
bench-compare: deps
	@$(MAKE) --no-print-directory all $(B)/bench/compare_bench
	@$(B)/bench/compare_bench $(BENCH_PAIRS)
	@echo
	@SHADE_BIN=$(BIN) bench/compare_e2e.py

# the shadow decision rules on simulated pair streams: false alarms and
# pairs to detection per scenario, 1,000 runs each (doc/shadow-report.md)
bench-decisions: all
	@$(BIN) simulate-decisions $(DECISION_ARGS)

# the canary rollout decision on simulated traffic: wrongful rollbacks,
# exposure before a rollback, freezes, 1,000 runs per scenario (doc/rollouts.md)
bench-rollouts: all
	@$(BIN) simulate-rollouts $(ROLLOUT_ARGS)
	@bench/rollback_streams.py

# what a key and its limits cost per request: serving-process CPU with and
# without them, in the same run; then a tpm limit under 1,000 streaming
# clients and 5 reloads (doc/benchmarks.md)
bench-limits: all
	@bench/limits.sh
	@bench/limits_exact.py

$(B)/bench/compare_bench: bench/compare_bench.c $(LIB_OBJS) tests/unit/compare_ref.h
	@mkdir -p $(B)/bench
	$(CC) $(ALL_CFLAGS) -Itests/unit -o $@ $< $(LIB_OBJS) $(LDLIBS)

fuzz:
	@fuzz/build.sh

format:
	clang-format -i $(SRCS) $(HDRS)

clean:
	rm -rf build bin
