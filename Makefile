# Every target sets itself up: `make fit` and `make test` work on a fresh clone.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
CONFIG  ?= configs/default.yaml
STAMP   := $(VENV)/.installed

.PHONY: setup fit test test-fast docs bench tensorboard lint format clean

setup: $(STAMP)

# Re-install only when the dependency lists change, so a second `make setup` takes a moment. --no-compile: pip
# would byte-compile every module of torch, ray and onnx (half the install time); Python compiles the ones it
# imports on first use instead, and keeps them: the targets below write byte-code even where the machine sets
# PYTHONDONTWRITEBYTECODE (as this one does), else every process would compile torch again (slower tests).
export PYTHONDONTWRITEBYTECODE :=
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-compile -c constraints.txt -e ".[dev,hpo,ray,export,loggers,optim,serve,shards,gan]"
	# The JapaneseVowels speech files ship inside aeon's wheel; aeon's own pins (pandas < 3.1, numba: numpy < 2.4)
	# clash with the template's, and aeon is never imported: its files alone, without its dependencies.
	$(BIN)/python -m pip install --quiet --no-compile --no-deps aeon==1.6.0
	touch $(STAMP)

fit: setup
	$(BIN)/python -m proj fit --config $(CONFIG)

# Two pytest-xdist workers (one per core here); tests sharing a trained run are grouped onto one worker.
TEST_WORKERS ?= 2
test: setup
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=10

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# The manual (docs/, mkdocs.yml) as a site in site/; `.venv/bin/mkdocs serve` shows it while you edit.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# The CPU benchmarks, side by side; rewrites benchmarks/README.md (about 40 minutes). Not part of `make test`.
bench: setup
	$(BIN)/python benchmarks/report.py

tensorboard: setup
	$(BIN)/tensorboard --logdir logs

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports    # pyproject.toml: the core never imports an extra; extras -> cli -> callbacks -> models, data -> optim -> nets
	test ! -f Dockerfile || $(BIN)/hadolint Dockerfile    # the serve extra's image (docs/extras/serve_container.md)

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf logs lightning_logs site .pytest_cache .ruff_cache build dist src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
