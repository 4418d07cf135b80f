# Two commands a new user types: `make demo` (the offline pipeline) and `make test`.
# Each creates its own virtualenv (.venv) from nothing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.14.1 torchvision==0.29.1

.PHONY: venv demo test lint bench-scrape clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# PyTorch first, pinned to the builds this machine keeps on disk (no download; ~1 min).
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev,train]'
	touch $(STAMP)

demo: venv
	rm -rf demo-out
	$(BIN)/datakit scrape --provider synthetic --params pipelines/demo/params.yaml \
	    --out demo-out/scrape --report demo-out/reports/scrape.json
	$(BIN)/datakit verify demo-out/scrape
	$(BIN)/datakit dedup demo-out/scrape --params pipelines/demo/params.yaml \
	    --out demo-out/dedup --report demo-out/reports/dedup.json
	$(BIN)/datakit split demo-out/dedup --params pipelines/demo/params.yaml \
	    --out demo-out/split --report demo-out/reports/split.json
	$(BIN)/datakit audit demo-out/split --params pipelines/demo/params.yaml --report demo-out/reports/audit.json
	$(BIN)/datakit export demo-out/split --out demo-out/imagefolder
	$(BIN)/datakit augment demo-out/split --params pipelines/demo/params.yaml \
	    --out demo-out/augment --report demo-out/reports/augment.json
	$(BIN)/datakit embed demo-out/augment --params pipelines/demo/params.yaml \
	    --out demo-out/embed --report demo-out/reports/embed.json
	$(BIN)/datakit balance demo-out/embed --params pipelines/demo/params.yaml \
	    --out demo-out/balance --report demo-out/reports/balance.json
	@echo "demo: stage folders demo-out/{scrape,dedup,split,augment,embed,balance}, duplicate gallery demo-out/dedup/gallery.html,"
	@echo "      balance page demo-out/balance/report.html, class folders demo-out/imagefolder/{train,val,test},"
	@echo "      figures demo-out/reports/*.json"

test: venv
	DVC_NO_ANALYTICS=1 $(BIN)/python -m pytest

bench-scrape: venv
	$(BIN)/python bench/scrape.py

clean:
	rm -rf $(VENV) demo-out bench-out .pytest_cache

lint: venv
	$(BIN)/ruff check src tests bench
