# The two README commands. `make demo`: fresh clone -> environment -> main job on the
# bundled sample. `make test`: environment -> whole test suite.
PYTHON ?= python3
VENV ?= .venv
PIP = $(VENV)/bin/pip
EXTRA ?= cpu
# llama-cpp-python compiles llama.cpp on first install; its multimodal library (mtmd) is
# never used here, and skipping it saves about 11% of the build. Set CMAKE_ARGS to override.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF

.PHONY: setup demo test bench

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e ".[$(EXTRA),test]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	HF_HUB_OFFLINE=1 $(VENV)/bin/searchagent demo

test: setup
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest -q tests
