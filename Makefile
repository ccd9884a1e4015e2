# ployz: the two commands a new user runs are `make demo` and `make test`; both install what they
# need first (idempotently, through `make setup`).

VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTEST := $(PY) -m pytest
STAMP := $(VENV)/.ployz-installed

.PHONY: setup system build compile debug lint test test-unit test-host test-zfs test-e2e \
        test-replicated \
        test-fuzz fuzz \
        bench bench-zfs bench-micro bench-migration bench-gateway demo clean

setup: system $(STAMP)

system:
	bash scripts/setup-system.sh

$(VENV)/bin/python:
	python3 -m venv $(VENV)

# Reinstall when the dependency list or the native sources change.
$(STAMP): $(VENV)/bin/python pyproject.toml setup.py $(wildcard native/*.* native/xfer/*.h)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

build compile: setup
	$(PY) setup.py -q build_ext --inplace

debug: setup
	CFLAGS="-O0 -g" $(PY) setup.py -q build_ext --inplace --force

lint: setup
	$(VENV)/bin/ruff check ployz cli tests bench native && $(VENV)/bin/mypy

test: setup lint test-unit test-host test-fuzz test-zfs

test-unit: setup
	$(PYTEST) tests/unit

test-host: setup
	$(PYTEST) tests/host

# Each fuzz harness of the wire parsers (tests/fuzz) for ~20 s from its seeds; a finding fails.
test-fuzz: setup
	$(PYTEST) tests/fuzz

# Each fuzz harness for FUZZ_SECONDS, the corpus kept in build/fuzz from run to run; findings go
# to build/fuzz/artifacts. Runs every harness, then fails if any found something.
FUZZ_SECONDS ?= 600
fuzz: setup
	@status=0; for harness in frames handshake dns; do \
		$(PY) tests/fuzz/run.py $$harness --seconds $(FUZZ_SECONDS) --asan || status=1; \
	done; exit $$status

# One VM boot runs the whole real-ZFS suite and the sandbox end-to-end tests (kernel WireGuard
# included); 6G, as the membership tests run four machines' Docker daemons and agents.
# The bytecode is compiled here first: the guest sees the checkout read-only, so a module without
# a fresh .pyc would be compiled again by every process that imports it, under emulation.
test-zfs: setup
	$(PY) -m compileall -q ployz cli tests bench
	$(PY) -m ployz.sandbox.vm --memory 6G pytest tests/zfs tests/e2e --durations=30

# The replicated JetStream servers killed mid-migration alone (make test runs them too; about
# 20 min in the VM: the sandbox cluster, the third machine's join that forms the servers, then
# the two kill tests).
test-replicated: setup
	$(PY) -m compileall -q ployz cli tests bench
	$(PY) -m ployz.sandbox.vm --memory 6G pytest tests/e2e/test_cluster_membership.py \
		-m replicated_failures

# Library send vs the zfs CLI, in the VM; writes reports/bench-zfs-send.json.
bench-zfs: setup
	$(PY) -m ployz.sandbox.vm run -- python -m bench.zfs.bench_send

# Cutover window of migrate apply vs stop-first in the sandbox; writes
# reports/bench-migration.json (make bench runs it too, into bench/results/).
bench-migration: setup
	$(PY) -m ployz.sandbox.vm --memory 8G run -- env PLOYZ_SANDBOX_POOL_SIZE=3G \
		python -m bench.migration

# The HTTP gateway (HAProxy) against a direct connection, on the host; writes
# reports/bench-gateway.json.
bench-gateway: setup
	PLOYZ_REPORTS=reports $(PY) -m bench.gateway

bench-micro: setup
	$(PYTEST) bench/micro --benchmark-only

bench: setup
	$(PY) -m bench.run_all

demo: setup
	$(PY) -m ployz.sandbox run --machines 3 -- bash scripts/demo.sh

clean:
	rm -rf build $(VENV) ployz/*.so ployz/_lzc.c native/*.c *.egg-info
