# RX: a Redis module running Redis Functions libraries in LuaJIT.
# `make run` and `make test` install what is missing first (Debian packages), then build.

SHELL := /bin/bash
CARGO ?= cargo
MODULE := $(CURDIR)/target/release/librx.so
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
PORT ?= 6379
# RX_TEST_DOCKER=1 make test: every test server runs in a container of this image.
RX_TEST_IMAGE ?= rx:test
export RX_TEST_IMAGE
# Debian packages the build and the tests need: the server (the oracle for differential
# tests), its tools, and libclang + clang's headers for redis-module's bindgen.
DEB_PACKAGES := redis-server redis-tools libclang1-14 libclang-common-14-dev
# What the tests need on top (installed by `make test` and `make test-matrix`, not by
# `make build`/`make run`): Debian's Prometheus exporter for Redis, which tests/metrics.rs
# runs with contrib/prometheus/rx_info.lua.
TEST_DEB_PACKAGES := prometheus-redis-exporter

.PHONY: all deps build test test-jit-off test-matrix unit fuzz run lint bench docker test-compose dist clean

all: build

deps:
	@missing=""; \
	for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "cargo is required (rustup)"; exit 1; }

build: deps
	$(CARGO) build --release --workspace

# Unit tests (pure parts, no server), integration tests (real redis-server processes; with
# RX_TEST_DOCKER=1, containers of $(RX_TEST_IMAGE), built first), and the Python client's
# tests (clients/python, against real servers too).
test: build
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(TEST_DEB_PACKAGES)"
	$(CARGO) build --release --examples
	@if [ -n "$$RX_TEST_DOCKER" ] && [ "$$RX_TEST_DOCKER" != 0 ]; then \
	  scripts/docker.sh image $(RX_TEST_IMAGE) && scripts/docker.sh clean-tests; \
	fi
	$(CARGO) test --release --workspace
	clients/python/run_tests.sh -q

# The whole suite again with LuaJIT's compiler off (module argument `jit no` on every server
# the tests start): results, kills and limits must be the same either way.
test-jit-off: build
	RX_TEST_JIT=no $(CARGO) test --release --workspace

# The integration tests against each supported server in turn (Debian 12's redis-server 7.0,
# Redis 8.0.2 and Valkey 8.1.1 built from Debian 13's sources, cached in ~/.cache/rx/servers),
# then a summary table. MATRIX_SERVERS="redis-8.0 valkey-8.1" picks servers; see the script.
test-matrix: build
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(TEST_DEB_PACKAGES)"
	scripts/test-matrix.sh

unit:
	$(CARGO) test --release --workspace --lib

# Fuzzing campaigns against real servers (tests/fuzz.rs): RX_FUZZ_SECONDS per campaign
# (default 20), RX_FUZZ_SEED to replay a run (always printed), RX_FUZZ_CASES to cap cases.
fuzz: build
	$(CARGO) test --release --test fuzz -- --ignored --test-threads=1 --nocapture

# A server with RX on PORT. Without PORT=, the first free port from 6379 (installing
# redis-server may have started the distribution's own server on 6379).
run: build
	@port=$(PORT); \
	if [ "$(origin PORT)" = file ]; then \
	  while (exec 3<>/dev/tcp/127.0.0.1/$$port) 2>/dev/null; do port=$$((port + 1)); done; \
	  [ $$port = $(PORT) ] || echo "port $(PORT) is in use (the distribution's redis-server?): RX starts on $$port"; \
	elif (exec 3<>/dev/tcp/127.0.0.1/$$port) 2>/dev/null; then \
	  echo "port $$port is already in use"; exit 1; \
	fi; \
	echo "redis-server with RX on port $$port: redis-cli -p $$port"; \
	exec redis-server --port $$port --loadmodule $(MODULE)

# RX against native FCALL in one server; writes bench/results.txt. The scale part
# (bench/scale.py) needs python3 as well.
bench: build
	@$(MAKE) --no-print-directory deps DEB_PACKAGES=python3
	bench/run.sh

# rustfmt --check and clippy with warnings as errors, over every crate and target.
lint: deps
	@$(CARGO) fmt --version >/dev/null 2>&1 || rustup component add rustfmt
	@$(CARGO) clippy --version >/dev/null 2>&1 || rustup component add clippy
	$(CARGO) fmt --all --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

# The image of a server with RX loaded, tagged rx:latest and rx:$(VERSION) (scripts/docker.sh:
# starts a Docker engine if none answers; RX_DOCKER_BASE picks the base image).
docker: build
	scripts/docker.sh image rx:latest rx:$(VERSION)

# The compose files (docker/compose.yml, docker/compose.cluster.yml) brought up and checked.
test-compose: docker
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="docker-compose redis-tools"
	scripts/test-compose.sh

# A release tarball in dist/: librx.so, the READMEs, the standard library's sources and a
# SHA-256 file, named with the version and platform.
dist: build
	scripts/dist.sh $(VERSION)

clean:
	$(CARGO) clean
