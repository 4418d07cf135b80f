# Two commands a new user types: `make demo` (the offline pipeline) and `make test`.
# Each creates its own virtualenv (.venv) from nothing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo test lint bench-scrape clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: venv
	rm -rf demo-out
	$(BIN)/datakit scrape --provider synthetic --params pipelines/demo/params.yaml \
	    --out demo-out/scrape --report demo-out/reports/scrape.json
	$(BIN)/datakit verify demo-out/scrape
	$(BIN)/datakit dedup demo-out/scrape --params pipelines/demo/params.yaml \
	    --out demo-out/dedup --report demo-out/reports/dedup.json
	@echo "demo: manifests in demo-out/scrape and demo-out/dedup, duplicate gallery demo-out/dedup/gallery.html, figures in demo-out/reports/"

test: venv
	DVC_NO_ANALYTICS=1 $(BIN)/python -m pytest

bench-scrape: venv
	$(BIN)/python bench/scrape.py

clean:
	rm -rf $(VENV) demo-out bench-out .pytest_cache

lint: venv
	$(BIN)/ruff check src tests bench
