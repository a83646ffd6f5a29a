# Set-up and everyday commands. `make demo` and `make test` work on a fresh Debian with Python 3.11.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST := $(BIN)/python -m pytest

.PHONY: setup demo test test-fast lint bench ceiling clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || { \
	  echo "python3-venv is missing; installing it (needs root)"; \
	  apt-get update && apt-get install -y python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,orpheus]"
	touch $(STAMP)

# Pretrained weights when the Hub (or the local HF cache) has them; random weights, loudly, if not.
demo: setup
	@if $(BIN)/python scripts/weights_available.py hubertsiuzdak/snac_24khz; then \
	  $(BIN)/python encode.py dataset=demo; \
	else \
	  echo ""; \
	  echo "#################################################################################"; \
	  echo "# The HF Hub is unreachable and snac_24khz is not cached: running the demo with  #"; \
	  echo "# codec.weights=random. The pipeline is real; the TOKENS ARE MEANINGLESS.        #"; \
	  echo "#################################################################################"; \
	  echo ""; \
	  $(BIN)/python encode.py dataset=demo codec.weights=random; \
	fi

# Every test, slow ones included (CI runs this). No network: HF_HUB_OFFLINE=1.
test: setup
	HF_HUB_OFFLINE=1 $(PYTEST) --durations=15

# The inner loop: skips tests that spawn encode.py runs.
test-fast: setup
	HF_HUB_OFFLINE=1 $(PYTEST) -m "not slow"

lint: setup
	$(BIN)/ruff check src tests scripts encode.py
	$(BIN)/ruff format --check src tests scripts encode.py

# ~12 min of generated speech through (a) the original method, (b) the model alone, (c) encode.py;
# then the ceiling without the model (`make ceiling`). Prints both tables and rewrites them in
# docs/performance.md. Takes ~25 min on 2 CPU cores.
bench: setup
	@command -v espeak-ng >/dev/null || { \
	  echo "espeak-ng is missing; installing it (needs root)"; \
	  apt-get update && apt-get install -y espeak-ng; }
	$(BIN)/python scripts/benchmark.py $(BENCH_ARGS)
	$(BIN)/python scripts/ceiling.py

# Readers per input kind, dry-run throughput, main-process capacity, commit latency, peak RSS
# (scripts/ceiling.py; ~10 min on 2 CPU cores, no espeak needed).
ceiling: setup
	$(BIN)/python scripts/ceiling.py $(CEILING_ARGS)

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
