# Two commands do all the set-up on a fresh machine (README):
#   make demo   the main job: a short active sweep (real training on CPU, local Ray, built-in corpus)
#               into studies/demo (replaced on each run)
#   make test   the test suite (what CI runs)
# Both create .venv and install the project into it on first use (CPU build of torch).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install grid bench clean

$(STAMP): pyproject.toml constraints/cpu.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "bayes-epm needs Python >= 3.11, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints/cpu.txt -e '.[test]'
	@touch $@

install: $(STAMP)

demo: $(STAMP)
	rm -rf studies/demo
	$(BIN)/bayes-epm sweep run studies/demo --config examples/demo_sweep.toml

test: $(STAMP)
	$(BIN)/python -m pytest

grid: $(STAMP)
	$(BIN)/python examples/tiny_grid.py

bench: $(STAMP)
	$(BIN)/python benchmarks/compression_overhead.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
