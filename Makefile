# Two commands for a newcomer: `make demo` and `make test`. Each sets up .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Where no GPU is present, install this torch first; a bare "torch" requirement would pull a multi-GB CUDA build.
# Off PyPI, the CPU build may need TORCH_INDEX=https://download.pytorch.org/whl/cpu.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=

.PHONY: install demo test lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	if ! $(BIN)/python -c "import torch" 2>/dev/null; then \
	  if nvidia-smi >/dev/null 2>&1; then $(BIN)/python -m pip install "torch>=2.4,<2.15"; \
	  else $(BIN)/python -m pip install "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)); fi; \
	fi
	$(BIN)/python -m pip install -q -e '.[dev,s3]'
	# The remote test's S3 server. Pinning botocore to what dvc-s3 brought keeps pip from backtracking for minutes.
	$(BIN)/python -m pip install -q "moto[server]>=5" "botocore==$$($(BIN)/python -c 'import botocore; print(botocore.__version__)')"
	touch $@

demo: install
	$(BIN)/a2i demo

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf .demo
