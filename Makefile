# The REWIND runtime's commands. `make run` and `make test` work on a fresh machine:
# they install what is missing (Go, a virtualenv, the Docker engine for container tests).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
GO_SRC := $(shell find proxy -name '*.go' 2>/dev/null) proxy/go.mod
PYTEST_ARGS ?=

.PHONY: dev run test lint test-go test-py test-container image bench bench-quick fuzz clean

dev: $(VENV)/.installed build/proxy

$(VENV)/.installed: pyproject.toml setup.py $(wildcard lib/rewind/memory/_inplace*.[ch])
	@test -x $(PY) || "$$(scripts/ensure-python.sh)" -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 \
	  | grep -v "^WARNING: Location" || true
	@$(PY) -c "import rewind, pytest, ruff" && touch $@

build/proxy: $(GO_SRC)
	@scripts/ensure-tool.sh go golang-go ca-certificates
	@mkdir -p build
	cd proxy && CGO_ENABLED=0 go build -o ../build/proxy ./cmd/proxy

# The main job: the runtime serving example actions with isolation on.
run: dev
	@scripts/demo.sh

lint: dev
	@test -z "$$(gofmt -l proxy)" || { echo "gofmt needed:"; gofmt -l proxy; exit 1; }
	cd proxy && go vet ./...
	$(VENV)/bin/ruff check lib tests bench
	$(VENV)/bin/ruff format --check lib tests bench
	$(VENV)/bin/mypy

test-go: dev
	cd proxy && go test -race -count=1 ./...

test-py: dev
	$(PY) -m pytest tests/unit tests/process -q $(PYTEST_ARGS)

image:
	@scripts/build-image.sh

test-container: dev image
	@scripts/ensure-tool.sh gradle gradle
	$(PY) -m pytest tests/container -q $(PYTEST_ARGS)

test: lint test-go test-py test-container

# The long fuzzing run of /run bodies (CI runs a short one in test-py).
fuzz: dev
	REWIND_FUZZ_EXAMPLES=10000 $(PY) -m pytest tests/process/test_fuzz_run.py -q

bench-quick: dev
	$(VENV)/bin/pip install -q --disable-pip-version-check -r bench/requirements.txt
	$(VENV)/bin/rewind bench --quick

bench: dev
	$(VENV)/bin/pip install -q --disable-pip-version-check -r bench/requirements.txt
	$(VENV)/bin/rewind bench

clean:
	rm -rf build $(VENV)
