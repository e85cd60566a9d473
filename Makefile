# The two commands of the README. Both create .venv on first use and reinstall when pyproject changes.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip wheel setuptools

# The edge install: OpenVINO + ONNX Runtime + report writers, no torch.
$(VENV)/.stamp-edge: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[edge]'
	touch $@

# Everything, including torch==2.13.0 (CPU wheel from local disk) for training, parity tests and the torch back-end.
$(VENV)/.stamp-all: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[all]'
	touch $@ $(VENV)/.stamp-edge

demo: $(VENV)/.stamp-edge
	$(BIN)/osteoscan demo -o demo_output

test: $(VENV)/.stamp-all
	$(BIN)/python -m pytest -q

lint: $(VENV)/.stamp-all
	$(BIN)/ruff check src tests

clean:
	rm -rf $(VENV) demo_output .pytest_cache build *.egg-info src/*.egg-info
