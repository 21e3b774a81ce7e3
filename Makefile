# The two README commands. `make demo`: fresh clone -> environment -> main job on the
# bundled sample. `make test`: environment -> whole test suite.
PYTHON ?= python3
VENV ?= .venv
PIP = $(VENV)/bin/pip
EXTRA ?= cpu
# llama-cpp-python compiles llama.cpp on first install; its multimodal library (mtmd) is
# never used here, and skipping it saves about 11% of the build. Set CMAKE_ARGS to override.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF

.PHONY: setup demo test browser

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e ".[$(EXTRA),test]"
	touch $@

setup: $(VENV)/.installed

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
$(VENV)/.test-extras: $(VENV)/.installed
	$(PIP) install --quiet -e ".[$(TEST_EXTRAS)]"
	touch $@

test: setup $(VENV)/.test-extras browser
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest -q tests
