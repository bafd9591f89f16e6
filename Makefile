# The README's two commands are `make demo` and `make test`; the rest serves them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
BUF := node_modules/.bin/buf

.PHONY: demo test install proto proto-check lint up

$(BIN)/c2d: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/c2d

demo: install
	$(BIN)/c2d demo

up: install
	$(BIN)/c2d up

test: install
	$(BIN)/pytest

$(BUF):
	npm install --no-save --no-audit --no-fund @bufbuild/buf

# Regenerate gen/ from protos/ (the one command for generated code).
proto: $(BUF) install
	rm -rf gen
	$(BUF) generate
	find gen -type d -exec touch {}/__init__.py \;

# Fails when protos/ and gen/ disagree, or the contracts break lint rules.
proto-check: proto
	$(BUF) lint
	git diff --exit-code --stat -- gen
	test -z "$$(git status --porcelain -- gen)"
