# The two README commands. `make demo`: fresh clone -> environment -> main job on the
# bundled sample. `make test`: environment -> whole test suite.
PYTHON ?= python3
VENV ?= .venv
PIP = $(VENV)/bin/pip
EXTRA ?= cpu
# llama-cpp-python compiles llama.cpp on first install; its multimodal library (mtmd) is
# never used here, and skipping it saves about 11% of the build. Set CMAKE_ARGS to override.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF

# pip's default torch wheel for Linux carries the CUDA libraries (GBs); on a CPU-only
# machine `make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu` takes the CPU build
TORCH_INDEX ?=
PY311 = -c 'import sys; sys.exit(sys.version_info < (3, 11))'

.PHONY: setup demo test browser

# one stamp per EXTRA: `make demo EXTRA=gpu` after a CPU setup installs faiss-gpu-cu12 and
# removes faiss-cpu (both provide the `faiss` module)
$(VENV)/.installed-$(EXTRA): pyproject.toml
	@if [ -x $(VENV)/bin/python ] && ! $(VENV)/bin/python $(PY311); then \
	  echo "$(VENV) holds Python $$($(VENV)/bin/python -V 2>&1 | cut -d' ' -f2), under 3.11: making it again"; \
	  rm -rf $(VENV); fi
	@$(PYTHON) $(PY311) 2>/dev/null || { echo "searchagent needs Python 3.11+, and \
	$(PYTHON) is $$($(PYTHON) -V 2>&1): give one, e.g. make demo PYTHON=python3.11"; exit 1; }
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(if $(TORCH_INDEX),$(PIP) install --quiet "torch==2.13.0" --extra-index-url $(TORCH_INDEX))
	$(PIP) uninstall --quiet -y $(if $(filter gpu,$(EXTRA)),faiss-cpu,faiss-gpu-cu12) 2>/dev/null || true
	$(PIP) install --quiet -e ".[$(EXTRA),test]"
	rm -f $(VENV)/.installed-*
	touch $@

setup: $(VENV)/.installed-$(EXTRA)

demo: setup
	HF_HUB_OFFLINE=1 $(VENV)/bin/searchagent demo

# The web page's browser test drives Debian's chromium (never a downloaded one): install it
# when missing and we may (root with apt-get); otherwise that test skips and says why.
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium for the browser test (apt-get)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    chromium chromium-driver >/dev/null) \
	  || echo "chromium could not be installed; the browser test will skip"; \
	fi

# The tests also cover the optional extras: embedding backends (ONNX Runtime, OpenVINO)
# and the distributed build (a local Ray).
TEST_EXTRAS ?= onnx,openvino,ray
$(VENV)/.test-extras: $(VENV)/.installed-$(EXTRA)
	$(PIP) install --quiet -e ".[$(TEST_EXTRAS)]"
	touch $@

test: setup $(VENV)/.test-extras browser
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest -q tests
