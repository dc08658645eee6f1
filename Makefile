# containerpilot — common tasks. `make help` lists them.
TARGET  ?= x86_64-unknown-linux-gnu
BIN     := target/$(TARGET)/release/containerpilot
GIT_HASH := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
export CONTAINERPILOT_GIT_HASH := $(GIT_HASH)

.PHONY: help build static musl test lint fmt bench run-example soak

help:
	@echo "build        debug build"
	@echo "static       release build, statically linked (prints size and 'file' output)"
	@echo "musl         release build for x86_64-unknown-linux-musl (needs that target installed)"
	@echo "test         the full test suite (what CI runs)"
	@echo "lint         rustfmt check + clippy with warnings as errors"
	@echo "bench        release build + benchmark table"
	@echo "run-example  run the bundled example config"
	@echo "soak         release build, then the soak test for SOAK_SECONDS (default 3600) with its summary"

build:
	cargo build

static:
	cargo build --release
	@file $(BIN)
	@ls -l $(BIN) | awk '{print "size: " $$5 " bytes"}'

musl:
	cargo build --release --target x86_64-unknown-linux-musl
	@ls -l target/x86_64-unknown-linux-musl/release/containerpilot | awk '{print "size: " $$5 " bytes"}'

test:
	cargo test --all-features

lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

fmt:
	cargo fmt

bench: static
	@command -v tini >/dev/null && command -v dumb-init >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq tini dumb-init >/dev/null; } || \
	  echo "tini/dumb-init could not be installed: their columns will say so"
	cargo test --release --test bench -- --ignored --nocapture --test-threads=1

run-example:
	cargo run --release -- -config tests/fixtures/example.json5

SOAK_SECONDS ?= 3600
soak:
	SOAK_SECONDS=$(SOAK_SECONDS) cargo test --release --test soak -- --nocapture
