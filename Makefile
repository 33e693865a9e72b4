# Two commands on a fresh machine: `make run` (set up, open the console) and
# `make test` (set up, run every test). Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test snapshots pictures bench lint

# One line of its own on a first run; pip's output only if it fails (it is kept in
# .venv/install.log either way).
$(STAMP): pyproject.toml constraints.txt
	@echo "Setting up $(VENV) (the first time takes a minute or two)..."
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip > $(VENV)/install.log 2>&1 \
	  && $(BIN)/python -m pip install -q -c constraints.txt -e '.[test,dev,postgres]' >> $(VENV)/install.log 2>&1 \
	  || { cat $(VENV)/install.log; echo "Setting up $(VENV) failed: see above"; exit 1; }
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/exalate-tui

# Two workers: the tests wait on real nodes as much as they compute.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup

# Re-record snapshot baselines; review snapshot_report.html first. Whole files,
# never -k: syrupy deletes the baselines of deselected tests.
SNAPSHOT_TESTS := $(shell grep -rl snap_compare tests --include='test_*.py')
snapshots: $(STAMP)
	$(BIN)/python -m pytest -p no:xdist $(SNAPSHOT_TESTS) --snapshot-update

# The README's pictures of the seed's flow: the snapshot baselines of its screens at
# 80x24, copied under docs/pictures/ (re-run after `make snapshots`).
PICTURES := destination config_type note info invitation_copied connections_after_done \
	accept_valid
pictures:
	@mkdir -p docs/pictures
	@for name in $(PICTURES); do \
	  cp "snapshots/test_screens_snapshots/test_$${name}[80x24].svg" "docs/pictures/$${name}.svg"; \
	done
	@cp "snapshots/test_tickets_snapshots/test_tickets_several[80x24].svg" docs/pictures/tickets.svg
	@echo "docs/pictures/: $(words $(PICTURES)) screens of the seed's flow and the Tickets tab"

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# Style, types, and the layer contracts of docs/architecture.md (pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check exalate_tui screens tests benchmarks
	$(BIN)/ruff format --check exalate_tui screens tests benchmarks
	$(BIN)/mypy exalate_tui screens
	$(BIN)/mypy tests benchmarks
	$(BIN)/lint-imports
