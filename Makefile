# Every target sets up what it needs on a fresh Debian machine (see scripts/).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: venv proto proto-check lint typecheck check test test-fast demo bench bench-peers dist clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	bash scripts/setup-venv.sh $(VENV)
	touch $@

proto: venv
	bash scripts/gen-proto.sh $(PY)

proto-check: venv
	bash scripts/gen-proto.sh $(PY) --check

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy agent/hatrain client/hatrain tests bench examples

check: proto-check lint typecheck

# The test command: installs Docker, sshd, Axolotl (cached) and starts what the tests need.
# The fast tier runs first: a logic error shows in seconds, before the real parts are tried.
test: venv
	bash scripts/setup-host.sh --test-gpu-hook
	$(MAKE) check
	$(MAKE) test-fast
	$(PY) -m pytest -ra --ignore=tests/fast $(PYTEST_ARGS)

# Runner, supervisor and recovery over an in-memory runtime (tests/fast): seconds, no set-up.
# Their stores and data roots live in memory (/dev/shm), and only tests/fast's fixtures load.
test-fast: venv
	@tmp=$$(mktemp -d -p /dev/shm hatrain-test-fast.XXXXXX) && \
	$(PY) -m pytest -q -p no:cacheprovider --confcutdir=tests/fast --basetemp=$$tmp/t tests/fast; \
	status=$$?; rm -rf $$tmp; exit $$status

# The main job: an agent on this machine and a real training run submitted through the client.
demo: venv
	bash scripts/setup-host.sh
	bash scripts/demo.sh

bench: venv
	bash scripts/setup-host.sh
	$(PY) bench/run_all.py
	$(PY) bench/client_bench.py
	$(PY) bench/faults.py
	$(PY) bench/schedule_trace.py
	$(MAKE) bench-peers

# hatrain against Slurm and Ray Jobs, set up here for the run and torn down after it.
bench-peers: venv
	bash scripts/setup-host.sh
	bash scripts/bench-peers.sh up && $(PY) bench/peers.py $(PEERS_ARGS); \
	status=$$?; bash scripts/bench-peers.sh down; exit $$status

# The wheel to install on GPU hosts (and laptops): dist/hatrain-VERSION-py3-none-any.whl.
dist: venv
	rm -rf dist build
	$(PY) -m pip wheel --quiet --no-deps --wheel-dir dist .
	rm -rf build
	@ls dist/*.whl

clean:
	rm -rf $(VENV) build dist *.egg-info
