# Thin wrapper over CMake. `make demo` and `make check` are the README's two commands.
BUILD      ?= build
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
WERROR     ?= 1
CMAKE_ARGS ?=
PREFIX     ?= /usr/local
WOPT        = -DWERROR=$(if $(filter 0,$(WERROR)),OFF,ON)
# The ASan+UBSan tree is built with clang when it is installed, so `make check`
# compiles the project with both compilers (the other trees use cc = gcc).
ASAN_CC    ?= $(shell command -v clang 2>/dev/null || echo cc)

.PHONY: all deps build demo install check check-fast san clean plots

all: build

deps:
	@./scripts/install-deps.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) $(WOPT) $(CMAKE_ARGS)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	./$(BUILD)/vmmu run

# Into any directory, root not needed: the prefix is given at install time
# (the .pc files are written then), so one build installs anywhere.
# DESTDIR=... stages the files under another root, as packagers do.
install: build
	cmake --install $(BUILD) --prefix $(abspath $(PREFIX))

# Sanitizer trees; their tests are registered in the main tree's ctest.
san: deps
	cmake -S . -B $(BUILD)-asan $(WOPT) -DVMMU_SANITIZE=address -DCMAKE_BUILD_TYPE=Debug \
	  -DCMAKE_C_COMPILER=$(ASAN_CC) $(CMAKE_ARGS)
	cmake --build $(BUILD)-asan -j $(JOBS)
	cmake -S . -B $(BUILD)-tsan $(WOPT) -DVMMU_SANITIZE=thread -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_ARGS)
	cmake --build $(BUILD)-tsan -j $(JOBS)

check: san
	cmake -S . -B $(BUILD) $(WOPT) \
	  "-DVMMU_SAN_DIRS=asan=$(abspath $(BUILD)-asan);tsan=$(abspath $(BUILD)-tsan)" $(CMAKE_ARGS)
	cmake --build $(BUILD) -j $(JOBS)
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The plain tree only, no sanitizers.
check-fast: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The sweeps of docs/benchmarks.md, measured on this machine: the CSVs and
# their pictures into docs/img/ (REPS=... for more repetitions).
REPS       ?= 5
SWEEPS      = vcpus cr3switch dirtylog
plots: build
	@./scripts/install-deps.sh --plots
	mkdir -p docs/img
	for b in $(SWEEPS); do \
	  ./$(BUILD)/vmmu bench $$b --sweep --reps $(REPS) --csv docs/img/$$b.csv --json >/dev/null || exit 1; \
	done
	./scripts/plot-bench -o docs/img $(foreach b,$(SWEEPS),docs/img/$(b).csv)

clean:
	rm -rf $(BUILD) $(BUILD)-asan $(BUILD)-tsan
