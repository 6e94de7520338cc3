# Two entry points for a fresh machine:
#   make up    installs Pinhole and runs `pinhole up` (local disk, in-process queue and cache)
#   make test  installs everything the tests need (apt packages, Python packages, photos) and runs them
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PHOTOS := .cache/photos/.complete
SEEDS  := .cache/afl-seeds/.complete
HEIF   := .cache/heif-samples/.complete
ANIMS  := .cache/animations/.complete

.PHONY: up test test-fast install system-deps test-system-deps photos seeds heif-samples animations lint typecheck imports check clean

up: install
	$(BIN)/pinhole up

test: install test-system-deps photos seeds heif-samples animations
	$(BIN)/python -m pytest -ra

# The quick loop while coding: everything but the cross-process end-to-end suites.
test-fast: install test-system-deps photos seeds heif-samples animations
	$(BIN)/python -m pytest -ra -m "not slow"

install: system-deps $(STAMP)

$(STAMP): requirements.lock requirements-nodeps.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# Pillow-SIMD builds from source here; nothing in the lock pulls stock Pillow.
	$(BIN)/pip install -q -r requirements.lock
	# pi-heif (HEIC decoding) declares stock Pillow: its own step, without dependencies.
	$(BIN)/pip install -q --no-deps -r requirements-nodeps.lock
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/python scripts/check_no_stock_pillow.py
	touch $@

system-deps:
	scripts/apt-install.sh gcc libjpeg-dev zlib1g-dev libwebp-dev

# libheif-examples: heif-enc (with x265) encodes the HEIC test files from real photos.
test-system-deps:
	scripts/apt-install.sh libheif-examples redis-server chromium prometheus nginx varnish varnish-modules wrk libnginx-mod-http-cache-purge docker-compose mariadb-server

photos: $(PHOTOS)

# Bad-input seeds from Debian's afl++-doc (AFL++'s image testcases).
seeds: $(SEEDS)

$(SEEDS): scripts/fetch-afl-seeds.sh
	scripts/fetch-afl-seeds.sh .cache/afl-seeds

# Real animated GIF/WebP from the test images of Pillow's sdist on PyPI.
animations: $(ANIMS)

$(ANIMS): scripts/fetch-animations.sh
	scripts/fetch-animations.sh .cache/animations

$(PHOTOS): scripts/fetch-photos.sh
	scripts/fetch-photos.sh .cache/photos

# HEIC/HEIF files: pillow-heif's sdist test images, and HEICs heif-enc makes from the photos.
heif-samples: $(HEIF)

$(HEIF): scripts/fetch-heif-samples.sh | $(PHOTOS) $(STAMP)
	scripts/fetch-heif-samples.sh .cache/heif-samples .cache/photos $(BIN)/pip

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# The layering contract in pyproject.toml [tool.importlinter] (README "Layout").
imports: install
	$(BIN)/lint-imports --no-logo --no-cache

check: lint typecheck imports

# Re-lock after changing dependencies in pyproject.toml.
lock: install
	$(BIN)/pip install -q uv
	$(BIN)/uv pip compile pyproject.toml --extra test --python-version 3.11 -o requirements.lock
	# The image's lock: no extras, and the same versions as the tested lock (tests/deploy checks).
	$(BIN)/uv pip compile pyproject.toml --python-version 3.11 -c requirements.lock -o docker/requirements-runtime.lock

clean:
	rm -rf $(VENV) .cache var .mypy_cache .ruff_cache .pytest_cache

# The peer comparisons of bench/transcode and bench/render (bench/README.md). Peers
# install into bench/ only: sharp and ipx into bench/*/node_modules, thumbor (stock
# Pillow) into bench/render/.venv, never into $(VENV).
BENCH_PHOTOS := .cache/bench-photos/.complete
THUMBOR      := bench/render/.venv/bin/thumbor

.PHONY: bench bench-deps
bench: bench-deps
	$(BIN)/python bench/transcode/bench.py
	$(BIN)/python -m bench.render.run

bench-deps: install $(BENCH_PHOTOS) $(THUMBOR)
	command -v npm >/dev/null || scripts/apt-install.sh nodejs npm
	cd bench/transcode && npm ci --no-audit --no-fund
	cd bench/render && npm ci --no-audit --no-fund

$(BENCH_PHOTOS): bench/fetch-photos.sh
	bench/fetch-photos.sh .cache/bench-photos

$(THUMBOR): bench/render/requirements-thumbor.txt
	test -x bench/render/.venv/bin/python || $(PYTHON) -m venv bench/render/.venv
	bench/render/.venv/bin/pip install -q -r bench/render/requirements-thumbor.txt
	touch $@
