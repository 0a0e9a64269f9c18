# One-command setup: `make run` starts the app, `make test` runs the whole suite.
# Both create .venv on first use; the stamp file makes later runs skip the installs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8501
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export STREAMLIT_BROWSER_GATHER_USAGE_STATS := false

.PHONY: run test install browser postgres bench-peers clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, from the local CPU wheel (see constraints.txt)
	$(BIN)/pip install --quiet torch==2.13.0
	# the ray, hf and lightning extras too, so tests/test_ray.py runs against a real local cluster
	# and tests/test_recorder.py against real Hugging Face and Lightning Trainers
	$(BIN)/pip install --quiet -e '.[dev,ray,hf,lightning]'
	touch $(STAMP)

# Debian's Chromium drives the browser tests; never `playwright install`.
browser:
	@test -x /usr/bin/chromium || { \
	  echo "Installing Chromium from Debian for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Debian's PostgreSQL server for the review-store tests (the tests start their own throwaway server).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "Installing PostgreSQL from Debian for the review-store tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

run: $(STAMP)
	$(BIN)/python -m streamlit run app.py --server.address 127.0.0.1 --server.port $(PORT) \
	  --server.headless true --server.fileWatcherType none --browser.gatherUsageStats false

test: $(STAMP) browser postgres
	$(BIN)/python -m pytest

# Our pipeline against cleanlab Datalab and umap-learn (bench/README.md); about two hours on 2 cores.
# The peers' extra packages go into .venv only for the benchmark, under constraints.txt.
bench-peers: $(STAMP)
	$(BIN)/pip install --quiet -r bench/requirements-peers.txt
	$(BIN)/python bench/peers.py

clean:
	rm -rf $(VENV) workspace .pytest_cache
