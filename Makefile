# One command to run the app, one to run every test. Both set up what they need first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test setup setup-dev browser lint format bench clean

run: setup  ## set up and start the app on http://127.0.0.1:8501
	$(BIN)/streamlit run app.py

test: setup-dev browser  ## set up, lint, and run the whole test suite (offline, tiny models)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	HF_HUB_OFFLINE=1 $(BIN)/pytest

setup: $(VENV)/.runtime-installed

setup-dev: $(VENV)/.dev-installed

$(VENV)/.runtime-installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.runtime-installed requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

browser:  ## Debian's Chromium, for the real-browser tests
	scripts/install-chromium.sh

lint: setup-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: setup-dev  ## full-size benchmarks (slow; figures go to bench/README.md)
	HF_HUB_OFFLINE=1 bench/run_all.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
