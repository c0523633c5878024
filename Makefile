# rstscope: `make demo` analyzes a bundled capture, `make test` runs the tests.
# Both create .venv and install the project on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO ?= captures/unread_data_reset.pcap

.PHONY: demo test test-fast lint fuzz fuzz-asan captures clean bench bench-quick

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
# sources in build/asan (so the ordinary in-place build is untouched) with its own venv, run under
# the sanitizer runtime; any report aborts the input, which the fuzz counts as a failure.
ASAN_DIR := build/asan
SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1
fuzz-asan: $(STAMP)
	rm -rf $(ASAN_DIR) && mkdir -p $(ASAN_DIR)
	tar cf - --exclude='*.so' --exclude='*.c' --exclude=__pycache__ pyproject.toml README.md analyzer captures | tar xf - -C $(ASAN_DIR)
	$(PY) -m venv $(ASAN_DIR)/.venv
	cd $(ASAN_DIR) && CFLAGS="$(SAN_FLAGS)" LDFLAGS="-fsanitize=address,undefined" .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
	cd $(ASAN_DIR) && ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
		LD_PRELOAD="$$($${CC:-cc} -print-file-name=libasan.so) $$($${CC:-cc} -print-file-name=libubsan.so)" \
		.venv/bin/python -m analyzer.fuzz --inputs $(or $(FUZZ_INPUTS),100000) --workers 2 --seconds 1500 --keep ../../fuzz-failures-asan

# Speed against tshark, tcptrace and NFStream (installed in bench-data/peers-venv, not a project
# dependency) on deterministic synthetic captures (cached in bench-data/): the short mix, 1M and
# 10M teardowns, a 1M-tuple SYN flood, startup; PASS/FAIL against the issue's targets. Then SYN
# floods, RST storms and sequence-number sweeps at three sizes (linearity, memory, verdicts).
bench: $(STAMP)
	$(BIN)/python bench/run_bench.py $(BENCH_ARGS)
	$(BIN)/python bench/adversarial.py

bench-quick: $(STAMP)
	$(BIN)/python bench/run_bench.py --quick
	$(BIN)/python bench/adversarial.py --quick

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
