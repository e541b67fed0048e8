# Every target sets itself up: a fresh clone needs only python3 (>= 3.11), pip and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.perdure-installed
NODE_VERIFIER := tests/agui_node/node_modules/.installed

.PHONY: demo test lint typecheck bench bench-peers soak clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test,dev]'
	touch $(STAMP)

# The official AG-UI verifier (@ag-ui/client) checks our logs in tests when npm exists.
$(NODE_VERIFIER): tests/agui_node/package.json tests/agui_node/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		cd tests/agui_node && npm ci --silent --no-audit --no-fund && touch node_modules/.installed; \
	else echo "npm not found: tests against the official AG-UI verifier will be skipped"; fi

demo: $(STAMP)
	$(BIN)/perdure demo

test: $(STAMP) $(NODE_VERIFIER)
	$(BIN)/python -m pytest -q

soak: $(STAMP) $(NODE_VERIFIER)
	PERDURE_SOAK=1 $(BIN)/python -m pytest -q -m soak

lint: $(STAMP)
	$(BIN)/ruff check perdure tests bench examples
	$(BIN)/mypy perdure

bench: $(STAMP)
	$(BIN)/python bench/throughput.py

clean:
	rm -rf $(VENV) tests/agui_node/node_modules demo-data
