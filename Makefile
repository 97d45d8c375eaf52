# fastjobs: `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

$(PY):
	python3 -m venv $(VENV)

.PHONY: deps
deps: $(PY) ## install what is missing: redis-server, openssl, postgresql and chromium (Debian), Python packages, crates
	@command -v redis-server >/dev/null && command -v openssl >/dev/null || { \
	  echo "installing redis-server and openssl (Debian packages)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server openssl >/dev/null; }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || { \
	  echo "installing postgresql (Debian package; the PostgreSQL store's tests start their own server)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql >/dev/null; }
	@command -v chromium >/dev/null || { \
	  echo "installing chromium (Debian package; tests/test_dashboard.py drives it headless)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }
	@$(PIP) install -q --disable-pip-version-check "maturin>=1.9.4,<2" "orjson>=3.8" "pytest>=7" "pytest-asyncio>=0.23" "pytest-timeout>=2" "hypothesis>=6" "numpy>=1.24" "watchfiles>=0.21" "fastapi>=0.110" "httpx>=0.27" "pydantic>=2" "opentelemetry-api>=1.20" "opentelemetry-sdk>=1.20" "uvicorn>=0.30" "django>=4.2" "psycopg[binary]>=3.1" "psycopg2-binary>=2.9"
	@cargo fetch -q

.PHONY: build
build: deps ## build the extension in release mode into the virtualenv
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(VENV)/bin/maturin develop --release -q

# The tests that run again on the in-process store, on SQLite, on PostgreSQL and on a Redis
# Cluster (FASTJOBS_TEST_STORE=memory, =sqlite, =postgres, =cluster): a job's whole life, through the public API,
# on every store; those marked redis_only (and those with a worker in a second process) are left out.
STORE_TESTS := tests/test_memory_store.py tests/test_worker.py tests/test_delays.py tests/test_chain.py \
	tests/test_flow.py tests/test_dedup.py tests/test_bulk.py tests/test_results.py tests/test_cancel.py \
	tests/test_queue_limits.py tests/test_groups.py tests/test_progress.py tests/test_hooks.py \
	tests/test_callbacks.py tests/test_timeouts.py tests/test_schemas.py tests/test_schedule.py tests/test_events.py

.PHONY: test
# cargo test and clippy use the dev profile: compiling the tests with the release profile's
# fat LTO took longer than running every other step, and cargo alternating with maturin in one
# profile rebuilds PyO3 and the crate each time (maturin sets PYO3_BUILD_EXTENSION_MODULE).
test: build ## build, then run cargo test (the store contract on every store) and pytest (on Redis, and again in memory, on SQLite, on PostgreSQL and on a Redis Cluster)
	cargo test -q
	@# The runs on the other stores mostly wait (their jobs sleep), so they go beside the Redis
	@# run; their output follows that run's.
	@FASTJOBS_TEST_STORE=memory $(PY) -m pytest -q -p no:cacheprovider $(STORE_TESTS) > target/memory-tests.log 2>&1 & memory=$$!; \
	FASTJOBS_TEST_STORE=sqlite $(PY) -m pytest -q -p no:cacheprovider $(STORE_TESTS) > target/sqlite-tests.log 2>&1 & sqlite=$$!; \
	FASTJOBS_TEST_STORE=postgres $(PY) -m pytest -q -p no:cacheprovider $(STORE_TESTS) > target/postgres-tests.log 2>&1 & postgres=$$!; \
	FASTJOBS_TEST_STORE=cluster $(PY) -m pytest -q -p no:cacheprovider $(STORE_TESTS) > target/cluster-tests.log 2>&1 & cluster=$$!; \
	$(PY) -m pytest -q --durations=10; redis=$$?; \
	wait $$memory; mem=$$?; wait $$sqlite; sql=$$?; wait $$postgres; pg=$$?; wait $$cluster; cl=$$?; \
	echo "== the same tests on the in-process store (FASTJOBS_TEST_STORE=memory):"; cat target/memory-tests.log; \
	echo "== the same tests on SQLite (FASTJOBS_TEST_STORE=sqlite):"; cat target/sqlite-tests.log; \
	echo "== the same tests on PostgreSQL (FASTJOBS_TEST_STORE=postgres):"; cat target/postgres-tests.log; \
	echo "== the same tests on a Redis Cluster of 3 primaries (FASTJOBS_TEST_STORE=cluster):"; cat target/cluster-tests.log; \
	test $$redis = 0 && test $$mem = 0 && test $$sql = 0 && test $$pg = 0 && test $$cl = 0

.PHONY: chaos
chaos: build ## the long fault runs of tests/chaos (kills, a poison job, Redis restarts, a cluster failover, network cuts, a zombie) and their figures
	$(PY) -m pytest -q -m chaos tests/chaos

.PHONY: lint-deps
lint-deps: $(PY) ## install the linters: ruff and mypy into the virtualenv, rustfmt and clippy into the toolchain
	@$(PIP) install -q --disable-pip-version-check "ruff>=0.13" "mypy>=2.0" "basedpyright>=1.30"
	@cargo fmt --version >/dev/null 2>&1 && cargo clippy --version >/dev/null 2>&1 || rustup component add rustfmt clippy

.PHONY: lint
lint: build lint-deps ## cargo fmt --check, clippy -D warnings, ruff, mypy --strict, stubtest, the README's examples under mypy --strict and pyright
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	$(VENV)/bin/ruff check
	$(PY) -m mypy --strict python/fastjobs
	$(PY) -m mypy.stubtest fastjobs._core
	$(PY) -m tests.readme_types

.PHONY: wheel
wheel: build ## the abi3 manylinux wheel and the sdist, into target/wheels
	rm -rf target/wheels
	$(VENV)/bin/maturin build --release -i $(PY) -o target/wheels
	$(VENV)/bin/maturin sdist -o target/wheels

.PHONY: wheel-check
wheel-check: wheel ## install the wheel into a fresh virtualenv without cargo and run the quick start against it
	$(PY) tests/wheel_check.py target/wheels

.PHONY: demo
demo: build ## dispatch 100,000 jobs, drain them with a worker, print counts, rates and latency
	$(PY) benches/demo.py

.PHONY: bench
bench: build ## fastjobs against the bench targets (1M enqueue, 10M generator, 1M drain, W3-W5)
	@$(PIP) install -q --disable-pip-version-check "redis[hiredis]>=5"
	$(PY) benches/bench.py

# BENCH_ARGS=--quick for a smaller try; STORES picks some of them.
STORES ?= redis memory sqlite postgres
.PHONY: bench-stores
bench-stores: build ## benches/bench.py on every store in turn (Redis, in process, SQLite, PostgreSQL): W1-W5 each
	@$(PIP) install -q --disable-pip-version-check "redis[hiredis]>=5"
	@for s in $(STORES); do echo "== store $$s"; $(PY) benches/bench.py --store $$s $(BENCH_ARGS) || exit 1; done

.PHONY: bench-lateness
bench-lateness: build ## lateness of 10,000 delayed jobs due over 10 s among 100,000 far-future ones
	$(PY) benches/lateness.py

.PHONY: bench-ceiling
bench-ceiling: build ## Redis's own cost per list element, with no producer work: the ceiling of W1
	$(PY) benches/redis_ceiling.py

.PHONY: bench-reserve
bench-reserve: build ## Redis's cost per record of a reserve, one record per list element against runs
	@$(PIP) install -q --disable-pip-version-check "redis[hiredis]>=5"
	$(PY) benches/reserve_cost.py

.PHONY: bench-trace
bench-trace: build ## W3 traced in Redis: every command of 1,000 dispatches to an idle worker, µs each
	@$(PIP) install -q --disable-pip-version-check "redis[hiredis]>=5"
	$(PY) benches/latency_trace.py

.PHONY: bench-flow
bench-flow: build ## a JobFlow of 10,000 children against the same jobs dispatched plainly
	$(PY) benches/flow.py

.PHONY: bench-controls
bench-controls: build ## what cancelling a waiting job by id costs by its depth, and emptying a queue of 1M jobs
	$(PY) benches/controls.py

.PHONY: bench-pool
bench-pool: build ## worker pools (--processes 1, 2, auto) against one worker process, I/O- and CPU-bound bodies
	@$(PIP) install -q --disable-pip-version-check "redis[hiredis]>=5"
	$(PY) benches/pool.py

.PHONY: bench-cluster
bench-cluster: build ## the same 3-queue load on one Redis, three Redis servers and a 3-primary Redis Cluster: rates, each node's CPU per job
	$(PY) benches/cluster.py $(BENCH_ARGS)

.PHONY: bench-cluster-sim
bench-cluster-sim: ## a model: jobs/s of 100 workers on 10 queues over 1, 3, 6 and 10 shards, even load and one hot queue (no servers)
	$(PY) benches/cluster_sim.py $(BENCH_ARGS)

.PHONY: bench-web
bench-web: build ## one job dispatched per HTTP request: FastAPI under uvicorn, /dispatch against /plain, driven by oha
	@$(PIP) install -q --disable-pip-version-check "fastapi>=0.110" "uvicorn[standard]>=0.30"
	@test -x $(VENV)/bin/oha || { echo "building the oha load client from crates.io into $(VENV)/bin (once, a few minutes)"; \
	  pkg-config --exists openssl || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq libssl-dev pkg-config >/dev/null; }; \
	  cargo install -q --locked --no-default-features --features native-tls --root $(VENV) oha; }
	$(PY) benches/web/run.py

.PHONY: bench-micro
bench-micro: build ## pytest-benchmark of single dispatch, bulk dispatch, status and counts
	@$(PIP) install -q --disable-pip-version-check "pytest-benchmark>=4"
	$(PY) -m pytest benches/test_micro.py -q -p no:cacheprovider --benchmark-columns=min,median,mean,ops -o testpaths=benches

.PHONY: peers
peers: ## install the peer queues into .venv-peers and the per-peer venvs of benches/peers/venvs.txt
	python3 benches/peers/install.py

.PHONY: bench-peers
bench-peers: build peers ## the same workloads on fastjobs and every peer, one Redis, ratios table
	@$(PIP) install -q --disable-pip-version-check "redis[hiredis]>=5"
	$(PY) benches/peers/run.py

.PHONY: bench-peers-pg
bench-peers-pg: build ## fastjobs' PostgreSQL store beside pgqueuer and procrastinate on one PostgreSQL server, ratios table
	python3 benches/peers/install.py --only pgqueuer,procrastinate
	$(PY) benches/peers/pg.py $(BENCH_ARGS)

.PHONY: clean
clean: ## remove build outputs and the virtualenv
	cargo clean
	rm -rf $(VENV) .venv-peers .venv-peers-* .pytest_cache
