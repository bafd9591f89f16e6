# The README's two commands are `make demo` and `make test`; the rest serves them.
# Every install comes from the lock files: uv.lock (Python, `uv sync --frozen`)
# and package-lock.json (buf, `npm ci`; sdk/typescript has its own). `make lock` updates uv.lock on purpose.
PYTHON ?= python3
UV_VERSION := 0.13.9
VENV := .venv
BIN := $(VENV)/bin
BUF := node_modules/.bin/buf
UV := $(BIN)/uv
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(PYTHON)

.PHONY: demo test install lock proto proto-check contracts-release lint format up sdk-ts sdk-ts-build

# uv itself lives in the project's venv, at a pinned version.
$(UV):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check uv==$(UV_VERSION)

$(BIN)/c2d: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --extra dev --reinstall-package c2d
	touch $@

install: $(BIN)/c2d

lock: | $(UV)
	$(UV) lock

demo: install
	$(BIN)/c2d demo

up: install
	$(BIN)/c2d up

# In parallel (pytest-xdist): the tests mostly wait on servers and processes.
# A whole file per worker, so a module's stack and a session's servers start once per worker.
test: install
	$(BIN)/pytest -n 3 --dist loadfile

$(BUF): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Regenerate gen/ from protos/ (the one command for generated code).
proto: $(BUF) install
	rm -rf gen
	$(BUF) generate
	find gen -type d -exec touch {}/__init__.py \;

# The TypeScript SDK: its tools and dependencies from its own lock file.
TS_SDK := sdk/typescript
TS_DEPS := $(TS_SDK)/node_modules/.package-lock.json
$(TS_DEPS): $(TS_SDK)/package.json $(TS_SDK)/package-lock.json
	cd $(TS_SDK) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Compile it to $(TS_SDK)/dist (the tests run its scripts from there).
sdk-ts-build: $(TS_DEPS)
	cd $(TS_SDK) && npm run --silent build

# Regenerate $(TS_SDK)/src/gen from protos/ (buf with the SDK's locked protoc-gen-es), then compile.
sdk-ts: $(BUF) $(TS_DEPS)
	$(BUF) generate --template buf.gen.ts.yaml
	$(MAKE) --no-print-directory sdk-ts-build

# The released contracts `buf breaking` compares against; updated only on purpose.
RELEASED := contracts/released-v1.binpb
contracts-release: $(BUF)
	$(BUF) build -o $(RELEASED)

# Every check that needs no running server; fails on the first violation.
lint: install $(BUF)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/hadolint deploy/Dockerfile
	$(BUF) lint
	$(BUF) format --diff --exit-code
	$(BUF) breaking --against $(RELEASED)

format: install $(BUF)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
	$(BUF) format -w

# Fails when protos/ and the generated code (Python and TypeScript) disagree,
# or the contracts break lint rules.
GENERATED := gen $(TS_SDK)/src/gen
proto-check: proto sdk-ts
	$(BUF) lint
	git diff --exit-code --stat -- $(GENERATED)
	test -z "$$(git status --porcelain -- $(GENERATED))"
