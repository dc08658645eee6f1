# containerpilot — common tasks. `make help` lists them.
# The shipped binary is the static musl build; `cargo build`/`cargo test` build for
# the gnu target (.cargo/config.toml), and the PID-1, scratch, Docker and bench
# tests build the musl one themselves (tests/ns/mod.rs).
MUSL    := x86_64-unknown-linux-musl
BIN     := target/$(MUSL)/release/containerpilot
MAX_SIZE := 3000000
IMAGE   ?= containerpilot:latest
GIT_HASH := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
export CONTAINERPILOT_GIT_HASH := $(GIT_HASH)

.PHONY: help build static musl image test lint fmt bench run-example soak fuzz startup-order

help:
	@echo "build        debug build (gnu target)"
	@echo "static       the shipped binary: static musl release build, TLS included;"
	@echo "             fails unless 'file' says static and it is <= $(MAX_SIZE) bytes"
	@echo "musl         same as static"
	@echo "image        FROM scratch image $(IMAGE) from that binary (no network)"
	@echo "test         the full test suite (what CI runs)"
	@echo "lint         rustfmt check + clippy with warnings as errors"
	@echo "bench        static build + benchmark table"
	@echo "run-example  run the bundled example config"
	@echo "startup-order regenerate .cargo/startup-order.ld (needs valgrind), then make static"
	@echo "soak         release build, then the soak test for SOAK_SECONDS (default 3600) with its summary"
	@echo "fuzz         each cargo-fuzz target for FUZZ_SECONDS (default 600), one after another"

build:
	cargo build

# The musl target comes from rustup; ring's C code is compiled with the host gcc
# (CC_x86_64_unknown_linux_musl in .cargo/config.toml).
static:
	@rustup target list --installed 2>/dev/null | grep -qx $(MUSL) || rustup target add $(MUSL)
	cargo build --release --target $(MUSL)
	@file $(BIN)
	@size=$$(stat -c %s $(BIN)); echo "size: $$size bytes"; \
	  file $(BIN) | grep -q 'statically linked' || { echo "$(BIN) is not static"; exit 1; }; \
	  [ $$size -le $(MAX_SIZE) ] || { echo "$(BIN) is over $(MAX_SIZE) bytes"; exit 1; }

musl: static

# Dockerfile.scratch's `prebuilt` stage: the binary above, copied into FROM scratch.
image: static
	docker build -f Dockerfile.scratch --target prebuilt -t $(IMAGE) .

# The linker script that lays out the idle daemon's code together (see
# tests/startup_order.rs); regenerate it when `make bench` shows idle RSS creeping up.
startup-order:
	@command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind; }
	cargo test --release --test startup_order --no-run
	cargo test --release --test startup_order -- --ignored --nocapture
	$(MAKE) static

test:
	cargo test --all-features

lint:
	cargo fmt --check
	cargo clippy --all-targets --all-features -- -D warnings

fmt:
	cargo fmt

# The bench measures the musl binary `static` built; the bench harness itself is a
# gnu release test binary, compiled before the (long) run starts.
bench: static
	@command -v tini >/dev/null && command -v dumb-init >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq tini dumb-init >/dev/null; } || \
	  echo "tini/dumb-init could not be installed: their columns will say so"
	cargo test --release --test bench --no-run
	cargo test --release --test bench -- --ignored --nocapture --test-threads=1 performance_table

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
