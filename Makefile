# captum-ext developer entry points. `make demo` and `make test` work from a fresh clone with
# nothing but Python >= 3.10: they create .venv on first use and install into it.
#
# Environment trap: torchvision only imports next to the torch build it was compiled against.
# We therefore install an explicit, matching torch/torchvision pair first (TORCH_PAIR below),
# then the package with its extras, and finally check that `import torchvision` works.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARCH := $(shell uname -m)
ifeq ($(ARCH),aarch64)
TORCH_PAIR ?= torch==2.9.1 torchvision==0.24.1
else
TORCH_PAIR ?= torch==2.14.1 torchvision==0.29.1
endif
STAMP := $(VENV)/.captum-ext-installed
OUT ?= reports/demo

.PHONY: demo test lint docs bench venv tutorials clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PAIR)
	$(PY) -m pip install --quiet -e ".[dev]" $(TORCH_PAIR)
	$(PY) -c "import torch, torchvision, captum, cvxpy; print('installed torch', torch.__version__, 'torchvision', torchvision.__version__, 'captum', captum.__version__, 'cvxpy', cvxpy.__version__)"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/captum-ext report --out $(OUT)
	@echo "Report written to $(abspath $(OUT))/index.html"

test: $(STAMP)
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check captum_ext tests benchmarks tutorials
	$(VENV)/bin/ruff format --check captum_ext tests benchmarks tutorials
	$(VENV)/bin/mypy -p captum_ext

docs: $(STAMP)
	$(VENV)/bin/sphinx-build -W --keep-going -b html docs docs/_build/html

bench: $(STAMP)
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) reports docs/_build .pytest_cache .ruff_cache *.egg-info
