# rstscope: `make demo` analyzes a bundled capture, `make test` runs the tests.
# Both create .venv and install the project on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO ?= captures/unread_data_reset.pcap

.PHONY: demo test test-fast lint fuzz fuzz-asan asan-build test-asan captures clean bench bench-quick bench-report

CORE_SRC := $(wildcard analyzer/core/*.pyx analyzer/core/*.pxd analyzer/core/*.pxi)

# The compiled core needs a C compiler and Python's headers: say so in one line, not a page.
$(STAMP): pyproject.toml $(CORE_SRC)
	@command -v $${CC:-cc} >/dev/null 2>&1 || { echo "rstscope: building the compiled core needs a C compiler: apt-get install build-essential" >&2; exit 2; }
	@$(PY) -c "import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" || { echo "rstscope: building the compiled core needs Python's headers: apt-get install python3-dev" >&2; exit 2; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/rstscope analyze --all $(DEMO)

test: $(STAMP)
	$(BIN)/python -m pytest -q -rs

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not root and not slow"

lint: $(STAMP)
	$(BIN)/ruff check analyzer tests

# Regenerates the labelled corpus with real sockets (needs root).
captures: $(STAMP)
	$(BIN)/rstscope lab run all --both --force -o captures

# At least 100,000 mutated and generated captures through the CLI, bounded to 10 minutes.
fuzz: $(STAMP)
	$(BIN)/python -m analyzer.fuzz --inputs 100000 --workers 2 --seconds 600 --keep fuzz-failures

# The same fuzz against the compiled core built with AddressSanitizer and UBSan: a copy of the
# sources and tests in build/asan with its own venv (kept between runs; the ordinary in-place build
# and .venv are never touched: no $(STAMP) here), run under the sanitizer runtime (LD_PRELOAD).
# PYTHONMALLOC=malloc: Python's own small-object allocator would hide bytes objects from ASan.
# Reports do not kill the process (-fsanitize-recover, halt_on_error=0: a dead pool worker would
# hang the fuzz); they go to build/asan/reports/, the fuzz counts an input after which its worker's
# report file grew as a failure (RSTSCOPE_SANITIZER_LOGS), and any report file at all fails the
# target. In the sanitizer build the decoder copies each frame into its own allocation of exactly
# the captured length (decode.pyx, __SANITIZE_ADDRESS__), so a read past it is reported.
ASAN_DIR := build/asan
ASAN_ABS := $(CURDIR)/$(ASAN_DIR)
SAN_FLAGS := -fsanitize=address,undefined -fsanitize-recover=address,undefined -fno-omit-frame-pointer -g -O1
SAN_ENV = PYTHONMALLOC=malloc RSTSCOPE_SANITIZER_LOGS=$(ASAN_ABS)/reports \
	ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1:halt_on_error=0:log_path=$(ASAN_ABS)/reports/asan \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=0:log_path=$(ASAN_ABS)/reports/ubsan \
	LD_PRELOAD="$$($${CC:-cc} -print-file-name=libasan.so) $$($${CC:-cc} -print-file-name=libubsan.so)"
# UBSan ignores log_path next to ASan: its reports are found on standard error (stderr.*).
SAN_CHECK = if ls $(ASAN_DIR)/reports/asan.* $(ASAN_DIR)/reports/ubsan.* >/dev/null 2>&1 \
	|| grep -lq 'runtime error\|Sanitizer' $(ASAN_DIR)/reports/stderr.* 2>/dev/null; then \
	head -n 60 $(ASAN_DIR)/reports/*; echo "rstscope: sanitizer reports in $(ASAN_DIR)/reports" >&2; \
	exit 1; else echo "rstscope: no sanitizer report"; fi
CORE_TESTS := tests/test_core_decode.py tests/test_core_decode_files.py tests/test_core_decode_input.py \
	tests/test_core_observer.py tests/test_core_conn.py \
	tests/test_core_zeek.py tests/test_core_verdict.py tests/test_core_records.py \
	tests/test_tunnels.py tests/test_columns.py

asan-build:
	mkdir -p $(ASAN_DIR)
	cd $(ASAN_DIR) && rm -rf analyzer tests captures build reports *.egg-info pyproject.toml README.md
	tar cf - --exclude='*.so' --exclude='*.c' --exclude=__pycache__ pyproject.toml README.md analyzer tests captures | tar xf - -C $(ASAN_DIR)
	test -x $(ASAN_DIR)/.venv/bin/python || $(PY) -m venv $(ASAN_DIR)/.venv
	cd $(ASAN_DIR) && CFLAGS="$(SAN_FLAGS)" LDFLAGS="-fsanitize=address,undefined" .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
	ldd $(ASAN_DIR)/analyzer/core/decode*.so | grep -q libasan || { echo "rstscope: the core in $(ASAN_DIR) is not built with ASan" >&2; exit 1; }

fuzz-asan: asan-build
	rm -rf $(ASAN_DIR)/reports $(ASAN_DIR)/fuzz-failures && mkdir -p $(ASAN_DIR)/reports
	cd $(ASAN_DIR) && $(SAN_ENV) timeout 3600 .venv/bin/python -m analyzer.fuzz --inputs $(or $(FUZZ_INPUTS),100000) \
		--workers 2 --seconds $(or $(FUZZ_SECONDS),1500) --keep fuzz-failures
	@$(SAN_CHECK)

# The compiled core's own tests against the sanitizer build.
test-asan: asan-build
	rm -rf $(ASAN_DIR)/reports && mkdir -p $(ASAN_DIR)/reports
	cd $(ASAN_DIR) && $(SAN_ENV) .venv/bin/python -m pytest -q -s -p no:cacheprovider $(or $(ASAN_TESTS),$(CORE_TESTS)) \
		2>reports/stderr.pytest; rc=$$?; tail -n 20 reports/stderr.pytest >&2; exit $$rc
	@$(SAN_CHECK)

# Speed against tshark, tcptrace and NFStream (installed in bench-data/peers-venv, not a project
# dependency) on deterministic synthetic captures (cached in bench-data/): the short mix, 1M and
# 10M teardowns, a 1M-tuple SYN flood, startup; PASS/FAIL against the issue's targets. Then SYN
# floods, RST storms and sequence-number sweeps at three sizes (linearity, memory, verdicts).
bench: $(STAMP)
	$(BIN)/python bench/run_bench.py $(BENCH_ARGS)
	$(BIN)/python bench/adversarial.py
	$(BIN)/python bench/report_bench.py

# The report, the overview plot and the text view's aggregates at 1M connections (seconds,
# peak memory, page size, Chromium's time to a usable table); the first run reads the capture
# once into the report's table (minutes), later runs start from it.
bench-report: $(STAMP)
	$(BIN)/python bench/report_bench.py $(REPORT_ARGS)

bench-quick: $(STAMP)
	$(BIN)/python bench/run_bench.py --quick
	$(BIN)/python bench/adversarial.py --quick

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
