# rstscope: `make demo` analyzes a bundled capture, `make test` runs the tests.
# Both create .venv and install the project on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO ?= captures/unread_data_reset.pcap

.PHONY: demo test test-fast lint fuzz captures clean bench bench-quick bench-report

$(STAMP): pyproject.toml
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

# Speed against tshark and tcptrace on deterministic synthetic captures (cached in bench-data/),
# then SYN floods, RST storms and sequence-number sweeps at three sizes (linearity, memory,
# verdicts).
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
