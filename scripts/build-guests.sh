#!/usr/bin/env bash
# Build every Rust guest in guest-examples/ into a WebAssembly component.
#
#   scripts/build-guests.sh            install the toolchain if missing, then build
#   scripts/build-guests.sh --setup    only install the toolchain
#
# Recipe (see ../shared/GUEST-TOOLCHAINS.md): `rustup target add wasm32-wasip2` is
# not reachable on these machines, so std for wasm32-wasip2 is built with
# -Zbuild-std from Debian's rustc-web and the *same version's* rust-web-src,
# unpacked (not installed) into a private folder, driven by rustup's cargo and
# linked by rustup's wasm-component-ld against Debian's wasi-libc. Every Rust
# guest is a `bin` (a wasi:cli command): the link adds our own `_start`
# (scripts/crt1-command.c, compiled here), which rustc leaves out with
# link-self-contained=no; Debian's crt1-command.o does not run constructors,
# which breaks std::fs (see that file).
#
# Environment:
#   WASMPROC_TOOLCHAIN_DIR  where the unpacked Debian compiler lives
#                           (default: ~/.cache/wasmproc/guest-toolchain)
#   WASMPROC_GUEST_TARGET   cargo target dir for the guests
#                           (default: guest-examples/target)
# Components are written to $WASMPROC_GUEST_TARGET/components/<name>.wasm.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TC=${WASMPROC_TOOLCHAIN_DIR:-$HOME/.cache/wasmproc/guest-toolchain}
GT=${WASMPROC_GUEST_TARGET:-$ROOT/guest-examples/target}
RB=$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin

log() { echo "build-guests: $*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

setup_toolchain() {
  if [ ! -f /usr/lib/wasm32-wasi/libc.a ] || ! command -v clang-19 >/dev/null; then
    log "installing clang-19, lld-19, wasi-libc (apt)"
    as_root apt-get update -q >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32 >/dev/null
  fi
  if [ -x "$TC/deb/usr/bin/rustc" ] && [ -f "$TC/version" ]; then
    return 0
  fi
  log "unpacking Debian rustc-web and rust-web-src into $TC"
  rm -rf "$TC" && mkdir -p "$TC/debs" "$TC/deb"
  local pkgs
  pkgs=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
           --no-replaces --no-enhances rustc-web | grep -E '^(rustc-web|libstd-rust-web|libllvm)' | sort -u)
  (cd "$TC/debs" && apt-get download -q $pkgs rust-web-src >/dev/null)
  for f in "$TC"/debs/*.deb; do dpkg -x "$f" "$TC/deb"; done
  # The compiler and the library sources must be the same version.
  local rv sv
  rv=$(dpkg-deb -f "$TC"/debs/rustc-web_*.deb Version)
  sv=$(dpkg-deb -f "$TC"/debs/rust-web-src_*.deb Version)
  if [ "$rv" != "$sv" ]; then
    log "rustc-web $rv and rust-web-src $sv differ; cannot build std"; exit 1
  fi
  rm -rf "$TC/debs"
  echo "$rv" > "$TC/version"
}

build_rust_guests() {
  local lib="$TC/deb/usr/lib/x86_64-linux-gnu"
  local crt="$GT/crt1-command.o"
  mkdir -p "$GT"
  if [ ! -f "$crt" ] || [ "$ROOT/scripts/crt1-command.c" -nt "$crt" ]; then
    clang-19 --target=wasm32-wasi -O2 -c "$ROOT/scripts/crt1-command.c" -o "$crt"
  fi
  log "building Rust guests (rustc-web $(cat "$TC/version")) into $GT"
  (cd "$ROOT/guest-examples" && \
    env LD_LIBRARY_PATH="$lib" RUSTC="$TC/deb/usr/bin/rustc" RUSTC_BOOTSTRAP=1 \
      PATH="$RB/gcc-ld:$PATH" \
      CARGO_TARGET_WASM32_WASIP2_LINKER="$RB/wasm-component-ld" \
      CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS="-C link-self-contained=no -L native=/usr/lib/wasm32-wasi -C link-arg=$crt" \
      cargo build -q --release --locked --target wasm32-wasip2 -Zbuild-std=std,panic_abort \
        --target-dir "$GT" --workspace)
  mkdir -p "$GT/components"
  local f name
  for f in "$GT"/wasm32-wasip2/release/*.wasm; do
    name=$(basename "$f" .wasm)
    cp "$f" "$GT/components/${name//_/-}.wasm"
  done
  log "components: $(cd "$GT/components" && echo *.wasm)"
}

setup_toolchain
[ "${1:-}" = "--setup" ] && exit 0
build_rust_guests
