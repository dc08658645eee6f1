# containerpilot — common tasks. `make help` lists them.
TARGET  ?= x86_64-unknown-linux-gnu
BIN     := target/$(TARGET)/release/containerpilot
GIT_HASH := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
export CONTAINERPILOT_GIT_HASH := $(GIT_HASH)

.PHONY: help build static musl test lint fmt bench run-example soak fuzz

help:
	@echo "build        debug build"
	@echo "static       release build, statically linked (prints size and 'file' output)"
	@echo "musl         release build for x86_64-unknown-linux-musl (needs that target installed)"
	@echo "test         the full test suite (what CI runs)"
	@echo "lint         rustfmt check + clippy with warnings as errors"
	@echo "bench        release build + benchmark table"
	@echo "run-example  run the bundled example config"
	@echo "soak         release build, then the soak test for SOAK_SECONDS (default 3600) with its summary"
	@echo "fuzz         each cargo-fuzz target for FUZZ_SECONDS (default 600), one after another"

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

# Fuzzing (not part of `make test` or CI). The fuzz crate in tests/fuzz is its own
# workspace, built by cargo-fuzz on nightly with ASan. It needs no .cargo/config.toml of
# its own: cargo-fuzz passes --target x86_64-unknown-linux-gnu and sets RUSTFLAGS, and a
# set RUSTFLAGS makes cargo ignore the static-link rustflags of our .cargo/config.toml,
# so the fuzzers link dynamically as the sanitizer runtime requires. New inputs go to
# tests/fuzz/target/corpus/<target> (not committed); tests/fuzz/corpus holds the seeds.
# Crashes land in tests/fuzz/artifacts/<target>/, libFuzzer's log in
# tests/fuzz/artifacts/<target>.log (its last DONE line: runs, cov, ft).
FUZZ_SECONDS ?= 600
FUZZ_DIR     := tests/fuzz
FUZZ_TARGETS := http_conn config template interfaces control_bodies

fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz
	cargo +nightly fuzz build --fuzz-dir $(FUZZ_DIR)
	@failed=; for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_DIR)/target/corpus/$$t $(FUZZ_DIR)/artifacts; \
	  echo "== fuzz $$t for $(FUZZ_SECONDS)s"; \
	  cargo +nightly fuzz run --fuzz-dir $(FUZZ_DIR) $$t \
	    $(FUZZ_DIR)/target/corpus/$$t $(FUZZ_DIR)/corpus/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -jobs=1 >/dev/null 2>&1 || failed="$$failed $$t"; \
	  mv -f fuzz-0.log $(FUZZ_DIR)/artifacts/$$t.log 2>/dev/null; \
	  grep -aE '^#[0-9]+[[:space:]]+DONE|^Done [0-9]+ runs|panicked|^==[0-9]+==ERROR|^SUMMARY|Test unit written' \
	    $(FUZZ_DIR)/artifacts/$$t.log; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz: crashes in:$$failed (see $(FUZZ_DIR)/artifacts/)"; exit 1; fi
