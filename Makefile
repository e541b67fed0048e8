# Every target sets itself up: a fresh clone needs only python3 (>= 3.11), pip and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.perdure-installed
NODE_VERIFIER := tests/agui_node/node_modules/.installed

.PHONY: demo test lint bench bench-peers bench-waits bench-schedules bench-retention bench-graphs soak clean

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
	$(BIN)/perdure demo --force

# With npm present the official AG-UI verifier is required, not skipped.
test: $(STAMP) $(NODE_VERIFIER)
	PERDURE_REQUIRE_NODE=$$(command -v npm >/dev/null 2>&1 && echo 1) $(BIN)/python -m pytest -q

# Every soak-marked sweep: kill -9 (PERDURE_SOAK_KILLS, default 1000) and power cuts on a
# volatile FUSE mount (PERDURE_SOAK_CUTS, default 200; skipped without fuse3 or root).
soak: $(STAMP) $(NODE_VERIFIER)
	PERDURE_SOAK=1 $(BIN)/python -m pytest -q -m soak

lint: $(STAMP)
	$(BIN)/ruff check perdure tests bench examples
	$(BIN)/mypy perdure

bench: $(STAMP)
	$(BIN)/python bench/throughput.py

# 10,000 minutely schedules in virtual time (fires/s, memory) and idle ones on a live
# runtime (trio CPU per second). `--hours 24` simulates the whole day (long).
bench-schedules: $(STAMP)
	$(BIN)/python bench/schedules.py

# A store under continuous load with and without retention (R38), three ABBA pairs;
# RUNS=1000000 for the full run, REPEAT=1 for one pair.
bench-retention: $(STAMP)
	$(BIN)/python bench/retention.py --repeat $(or $(REPEAT),3) $(if $(RUNS),--runs $(RUNS))

# Peers (DBOS, LangGraph) are installed from PyPI into the bench environment only here.
$(VENV)/.peers-installed: $(STAMP) bench/peers_requirements.txt
	$(BIN)/python -m pip install -q -c constraints.txt -r bench/peers_requirements.txt
	touch $@

bench-peers: $(VENV)/.peers-installed
	$(BIN)/python bench/vs_peers.py

bench-waits: $(VENV)/.peers-installed
	$(BIN)/python bench/waits.py

# Step graphs: perdure vs LangGraph (StateGraph + SQLite checkpointer), alternating rounds.
bench-graphs: $(VENV)/.peers-installed
	$(BIN)/python bench/graphs.py

clean:
	rm -rf $(VENV) tests/agui_node/node_modules demo-data
