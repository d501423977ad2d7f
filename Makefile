# Two commands for a newcomer: `make demo` and `make test` (the whole suite, what CI runs); `make test-fast` is the
# unit tier, without the demo workspace. Each sets up .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Where no GPU is present, install this torch first; a bare "torch" requirement would pull a multi-GB CUDA build.
# Off PyPI, the CPU build may need TORCH_INDEX=https://download.pytorch.org/whl/cpu.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=

.PHONY: install demo test test-fast lint clean gpu-wheels

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

test-fast: install
	$(BIN)/python -m pytest -m "not e2e"

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf .demo

# Wheels for a GPU machine without network whose Python 3.12 already has CUDA PyTorch, transformers and accelerate:
# copy .whl/ there with the checkout, and benchmarks/gpu.sh installs them. imageio-ffmpeg 0.6.0, not the newest:
# its ffmpeg (29 MB) keeps the copy small.
GPU_WHEELS := diffusers==0.42.1 soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 ffmpeg-python==0.2.0 future==1.0.0 \
	imageio-ffmpeg==0.6.0 ruamel.yaml==0.19.1 resampy==0.4.3
gpu-wheels:
	mkdir -p .whl
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  -d .whl $(GPU_WHEELS)
	$(PYTHON) -m pip wheel -q --no-deps -w .whl torchvggish==0.2  # published as a source archive only
	du -sh .whl
