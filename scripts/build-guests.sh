#!/usr/bin/env bash
# Build every guest in guest-examples/ into a WebAssembly component: the Rust
# guests (cargo workspace), and the C, Python and JavaScript guests
# (guest-examples/{c,python,js}/<name>.{c,py,js}, and the Node programs
# guest-examples/node/<name>.js; one component each).
#
#   scripts/build-guests.sh                 install missing toolchains, then build all four languages
#   scripts/build-guests.sh --setup         only install the toolchains (and the npm
#                                           dependencies of the JavaScript guest library)
#   scripts/build-guests.sh --skip-missing  install nothing; skip (and say so) each language
#                                           whose toolchain is missing
#
# Without --skip-missing (or WASMPROC_SKIP_MISSING=1), a toolchain that is
# missing and cannot be installed is an error: CI and the tests build all four.
#
# Rust recipe (see ../shared/GUEST-TOOLCHAINS.md): `rustup target add wasm32-wasip2` is
# not reachable on these machines, so std for wasm32-wasip2 is built with
# -Zbuild-std from Debian's rustc-web and the *same version's* rust-web-src,
# unpacked (not installed) into a private folder, driven by rustup's cargo and
# linked by rustup's wasm-component-ld against Debian's wasi-libc. Every Rust
# guest is a `bin` (a wasi:cli command): the link adds our own `_start`
# (scripts/crt1-command.c, compiled here), which rustc leaves out with
# link-self-contained=no; Debian's crt1-command.o does not run constructors,
# which breaks std::fs (see that file).
#
# C: clang-19 + Debian's wasi-libc, a plain `main` linked by wasm-component-ld
# straight to a wasi:cli command, with the same `_start` (-nostartfiles
# crt1-command.o: with Debian's, wasi-libc fills its preopen table inside the
# host's realloc callback and the guest traps). The wasmproc:process bindings
# are committed in guest-examples/c/gen (world wasmproc:process/guest); after
# a WIT change regenerate them with `scripts/build-guests.sh --regen-c-bindings`
# (builds guest-examples/c/cgen, a small program over the wit-bindgen-c library).
#
# Python: componentize-py (pip, in a venv under the toolchain dir), world
# wasmproc:process/command. JavaScript: componentize-js (npm, under the
# toolchain dir), world wasmproc:process/command, `-d http -d fetch-event` so
# it does not import wasi:http. A Python or JavaScript source with a line
# `world: WORLD` (in a comment or docstring, e.g. `world:
# wasi:cli/command@0.2.12`) is built for that world instead. Their
# components are 10-20 MB: never committed; each is rebuilt only when its
# source, the WIT or the tool changed.
#
# Environment:
#   WASMPROC_TOOLCHAIN_DIR  where the unpacked Debian compiler, the Python venv
#                           and the npm packages live
#                           (default: ~/.cache/wasmproc/guest-toolchain)
#   WASMPROC_GUEST_TARGET   cargo target dir for the guests
#                           (default: guest-examples/target)
#   WASMPROC_SKIP_MISSING=1 as --skip-missing
#   WASMPROC_GUEST_LANGS    the languages to build (default: "rust c python js";
#                           js includes the Node programs)
# Components are written to $WASMPROC_GUEST_TARGET/components/<name>.wasm
# (Rust), <name>-c.wasm, <name>-py.wasm, <name>-js.wasm, and <name>-node.wasm
# (guest-examples/node/<name>.js, CommonJS Node programs built with the
# guest library guest-libs/js/wasmproc-child-process, installed from the repo
# under $WASMPROC_TOOLCHAIN_DIR/js-lib); the Python guests are built with
# guest-libs/python/wasmproc-subprocess, pip-installed under
# $WASMPROC_TOOLCHAIN_DIR/py-lib.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TC=${WASMPROC_TOOLCHAIN_DIR:-$HOME/.cache/wasmproc/guest-toolchain}
GT=${WASMPROC_GUEST_TARGET:-$ROOT/guest-examples/target}
RB=$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin

COMPONENTIZE_PY_VERSION=0.25.1
COMPONENTIZE_JS_VERSION=0.23.0

log() { echo "build-guests: $*" >&2; }
die() { log "$*"; exit 1; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

setup_rust() {
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
  rm -rf "$TC/debs" "$TC/deb" "$TC/version" && mkdir -p "$TC/debs" "$TC/deb"
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
  build_crt
  log "building Rust guests (rustc-web $(cat "$TC/version")) into $GT"
  (cd "$ROOT/guest-examples" && \
    env LD_LIBRARY_PATH="$lib" RUSTC="$TC/deb/usr/bin/rustc" RUSTC_BOOTSTRAP=1 \
      PATH="$RB/gcc-ld:$PATH" \
      CARGO_TARGET_WASM32_WASIP2_LINKER="$RB/wasm-component-ld" \
      CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS="-C link-self-contained=no -L native=/usr/lib/wasm32-wasi -C link-arg=$crt" \
      cargo build -q --release --locked --target wasm32-wasip2 -Zbuild-std=std,panic_abort \
        --target-dir "$GT" --workspace --bins --examples)
  mkdir -p "$GT/components"
  local f name
  for f in "$GT"/wasm32-wasip2/release/*.wasm "$GT"/wasm32-wasip2/release/examples/*.wasm; do
    name=$(basename "$f" .wasm)
    [[ "$name" =~ -[0-9a-f]{16}$ ]] && continue  # cargo's hashed copies of examples
    cp "$f" "$GT/components/${name//_/-}.wasm"
  done
}

setup_python() {
  local venv="$TC/py/venv"
  if [ -x "$venv/bin/componentize-py" ] && [ "$(cat "$TC/py/version" 2>/dev/null)" = "$COMPONENTIZE_PY_VERSION" ]; then
    return 0
  fi
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    log "installing python3-venv (apt)"
    as_root apt-get update -q >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3 python3-venv >/dev/null
  fi
  log "installing componentize-py $COMPONENTIZE_PY_VERSION into $TC/py"
  rm -rf "$TC/py" && mkdir -p "$TC/py"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
  echo "$COMPONENTIZE_PY_VERSION" > "$TC/py/version"
}

setup_js() {
  if [ -x "$TC/js/node_modules/.bin/componentize-js" ] && [ "$(cat "$TC/js/version" 2>/dev/null)" = "$COMPONENTIZE_JS_VERSION" ]; then
    return 0
  fi
  if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
    log "installing nodejs, npm (apt)"
    as_root apt-get update -q >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm >/dev/null
  fi
  log "installing componentize-js $COMPONENTIZE_JS_VERSION into $TC/js"
  rm -rf "$TC/js" && mkdir -p "$TC/js"
  (cd "$TC/js" && echo '{"name":"wasmproc-guest-toolchain","private":true}' > package.json \
    && npm install -q --no-audit --no-fund "@bytecodealliance/componentize-js@$COMPONENTIZE_JS_VERSION" >/dev/null)
  echo "$COMPONENTIZE_JS_VERSION" > "$TC/js/version"
}

# Whether each language's toolchain is there (nothing is installed).
have_rust() { [ -x "$TC/deb/usr/bin/rustc" ] && [ -f "$TC/version" ] && have_c; }
have_c() { command -v clang-19 >/dev/null && [ -f /usr/lib/wasm32-wasi/libc.a ] && [ -x "$RB/wasm-component-ld" ]; }
have_python() { [ -x "$TC/py/venv/bin/componentize-py" ] && [ "$(cat "$TC/py/version" 2>/dev/null)" = "$COMPONENTIZE_PY_VERSION" ]; }
have_js() { [ -x "$TC/js/node_modules/.bin/componentize-js" ] && [ "$(cat "$TC/js/version" 2>/dev/null)" = "$COMPONENTIZE_JS_VERSION" ] && command -v node >/dev/null; }

# The crt `_start` shared by Rust and C command guests.
build_crt() {
  local crt="$GT/crt1-command.o"
  mkdir -p "$GT"
  if [ ! -f "$crt" ] || [ "$ROOT/scripts/crt1-command.c" -nt "$crt" ]; then
    clang-19 --target=wasm32-wasi -O2 -c "$ROOT/scripts/crt1-command.c" -o "$crt"
  fi
}

# A digest of the files and strings given, to rebuild a component only when
# one of its inputs changed.
inputs_digest() {
  { for x in "$@"; do
      if [ -d "$x" ]; then find "$x" -type f -name '*.wit' | LC_ALL=C sort | xargs sha256sum
      elif [ -f "$x" ]; then sha256sum "$x"
      else echo "$x"; fi
    done; } | sha256sum | cut -d' ' -f1
}

# world_of SOURCE: the world named by SOURCE's `world: WORLD` line, else
# wasmproc:process/command.
world_of() {
  local w
  w=$(sed -n -E 's@^[[:space:]#/*]*world: ([^[:space:]]+).*@\1@p' "$1" | head -1)
  echo "${w:-wasmproc:process/command}"
}

# up_to_date OUT DIGEST: OUT exists and was built from DIGEST.
up_to_date() { [ -f "$1" ] && [ "$(cat "$1.inputs" 2>/dev/null)" = "$2" ]; }

# build_if_changed OUT WHAT INPUT... -- COMMAND...: unless OUT was built from
# the same INPUTs (files, folders of .wit files, or strings such as tool
# versions), log WHAT and run COMMAND in the repository root; COMMAND writes
# OUT.tmp, which then replaces OUT.
build_if_changed() {
  local out=$1 what=$2 inputs=() digest
  shift 2
  while [ "$1" != "--" ]; do inputs+=("$1"); shift; done
  shift
  digest=$(inputs_digest "${inputs[@]}")
  up_to_date "$out" "$digest" && return 0
  log "building $what"
  (cd "$ROOT" && "$@" >/dev/null)
  mv "$out.tmp" "$out" && echo "$digest" > "$out.inputs"
}

build_c_guests() {
  build_crt
  mkdir -p "$GT/components"
  local src name out gen="$ROOT/guest-examples/c/gen"
  for src in "$ROOT"/guest-examples/c/*.c; do
    name=$(basename "$src" .c)
    out="$GT/components/$name-c.wasm"
    build_if_changed "$out" "C guest $name" "$src" "$gen"/* "$GT/crt1-command.o" "$(clang-19 --version | head -1)" -- \
      clang-19 --target=wasm32-wasi -O2 -Wall -Wextra -Werror -nostartfiles -fuse-ld="$RB/wasm-component-ld" \
        -I "$ROOT/guest-examples/c" -o "$out.tmp" "$src" "$gen/guest.c" "$gen/guest_component_type.o" "$GT/crt1-command.o"
  done
}

# The guest library guest-libs/python/wasmproc-subprocess, pip-installed
# from the repo into $TC/py-lib/<digest of its files> (one folder per
# version, so that worktrees building at once do not overwrite each
# other's), which the Python guests are built with (-p). Sets PY_LIB and
# PY_LIB_VERSION.
install_py_lib() {
  local pkg="$ROOT/guest-libs/python/wasmproc-subprocess" digest
  digest=$(inputs_digest "$pkg/pyproject.toml" "$pkg"/src/wasmproc_subprocess/*.py)
  PY_LIB="$TC/py-lib/$digest"
  PY_LIB_VERSION="wasmproc-subprocess $digest"
  [ -d "$PY_LIB" ] && return 0
  log "installing guest-libs/python/wasmproc-subprocess into $PY_LIB (pip)"
  # With setuptools and wheel (the build backend) in the venv nothing is
  # downloaded; else pip fetches them for the build.
  local isolation=()
  "$TC/py/venv/bin/python" -c 'import setuptools, wheel' 2>/dev/null && isolation=(--no-build-isolation)
  env PYTHONDONTWRITEBYTECODE=1 "$TC/py/venv/bin/pip" install -q --disable-pip-version-check --no-compile \
    "${isolation[@]}" --target "$PY_LIB.tmp.$$" "$pkg" >/dev/null || die "pip install of $pkg failed"
  mv -T "$PY_LIB.tmp.$$" "$PY_LIB" 2>/dev/null || rm -rf "$PY_LIB.tmp.$$"
  # pip builds in a copy, but setuptools leaves build/ and *.egg-info in the source.
  rm -rf "$pkg/build" "$pkg"/src/*.egg-info
}

build_python_guests() {
  install_py_lib
  mkdir -p "$GT/components"
  local src name out world lib="$PY_LIB"
  for src in "$ROOT"/guest-examples/python/*.py; do
    name=$(basename "$src" .py)
    out="$GT/components/$name-py.wasm"
    # A script with a `# wasmproc: worker` line is a forked worker; else
    # the world of its `world:` line, if any.
    world=$(world_of "$src")
    grep -q '^# wasmproc: worker$' "$src" && world=wasmproc:process/worker-command
    build_if_changed "$out" "Python guest $name (componentize-py $COMPONENTIZE_PY_VERSION)" \
      "$src" "$world" "$PY_LIB_VERSION" "$ROOT/wit" "componentize-py $COMPONENTIZE_PY_VERSION" -- \
      env PYTHONDONTWRITEBYTECODE=1 "$TC/py/venv/bin/componentize-py" -d wit -w "$world" \
        componentize -p guest-examples/python -p "$lib" "$name" -o "$out.tmp"
  done
}

# The npm package guest-libs/js/wasmproc-child-process: its dependencies
# (esbuild, componentize-js, events, buffer, util, string_decoder,
# path-browserify) are installed by npm from
# the repo's package.json into $TC/js-lib, a folder of its own so that they
# never move the toolchain's (afresh when package.json changed; part of
# --setup).
JS_LIB_PKG="$ROOT/guest-libs/js/wasmproc-child-process"
have_js_lib() { [ "$(cat "$TC/js-lib/package.inputs" 2>/dev/null)" = "$(inputs_digest "$JS_LIB_PKG/package.json")" ]; }
setup_js_lib() {
  have_js_lib && return 0
  local dst="$TC/js-lib"
  log "installing the dependencies of guest-libs/js/wasmproc-child-process into $dst (npm)"
  rm -rf "$dst" && mkdir -p "$dst"
  (cd "$dst" && echo '{"name":"wasmproc-guest-libs","private":true}' > package.json \
    && npm install -q --no-audit --no-fund --install-links "$JS_LIB_PKG" >/dev/null 2>&1) \
    || die "npm install of $JS_LIB_PKG failed"
  inputs_digest "$JS_LIB_PKG/package.json" > "$dst/package.inputs"
}

# The package's own files are copied into
# $TC/js-lib/node_modules/.wasmproc-child-process-<digest>, one folder per
# version of them, so that worktrees building at once with different
# versions do not overwrite each other's. Sets JS_LIB_BIN to its build
# command.
stage_js_lib() {
  local digest stage
  digest=$(inputs_digest "$JS_LIB_PKG/package.json" "$JS_LIB_PKG"/lib/* "$JS_LIB_PKG"/bin/*)
  stage="$TC/js-lib/node_modules/.wasmproc-child-process-$digest"
  if [ ! -d "$stage" ]; then
    mkdir -p "$stage.tmp.$$" && cp -r "$JS_LIB_PKG/package.json" "$JS_LIB_PKG/lib" "$JS_LIB_PKG/bin" "$stage.tmp.$$/"
    mv -T "$stage.tmp.$$" "$stage" 2>/dev/null || rm -rf "$stage.tmp.$$"
  fi
  JS_LIB_BIN="$stage/bin/componentize-node.js"
}

# guest-examples/node/NAME.js: CommonJS Node programs, each built by the
# library's wasmproc-componentize-node into NAME-node.wasm (world
# worker-command for a script with a `// wasmproc: worker` line).
build_node_guests() {
  if ! have_js_lib; then
    if [ "$SKIP_MISSING" = 1 ]; then
      log "SKIPPING Node programs: the JavaScript guest library's dependencies are missing (--skip-missing)"
      return 0
    fi
    setup_js_lib
  fi
  stage_js_lib
  mkdir -p "$GT/components"
  local pkg="$JS_LIB_PKG" src name out worker
  for src in "$ROOT"/guest-examples/node/*.js; do
    name=$(basename "$src" .js)
    out="$GT/components/$name-node.wasm"
    worker=()
    grep -q '^// wasmproc: worker$' "$src" && worker=(--worker)
    build_if_changed "$out" "Node program $name (wasmproc-componentize-node)" \
      "$src" "${worker[@]}" "$pkg/package.json" "$pkg"/lib/* "$pkg"/bin/* "$ROOT/wit" \
      "componentize-js $COMPONENTIZE_JS_VERSION" -- \
      node "$JS_LIB_BIN" "$src" "${worker[@]}" --wit wit -o "$out.tmp"
  done
}

build_js_guests() {
  mkdir -p "$GT/components"
  local src name out
  for src in "$ROOT"/guest-examples/js/*.js; do
    name=$(basename "$src" .js)
    out="$GT/components/$name-js.wasm"
    build_if_changed "$out" "JavaScript guest $name (componentize-js $COMPONENTIZE_JS_VERSION)" \
      "$src" "$ROOT/wit" "componentize-js $COMPONENTIZE_JS_VERSION" -- \
      "$TC/js/node_modules/.bin/componentize-js" --wit wit --world-name "$(world_of "$src")" \
        -d http -d fetch-event -o "$out.tmp" "$src"
  done
}

regen_c_bindings() {
  log "building guest-examples/c/cgen and regenerating guest-examples/c/gen"
  cargo build -q --release --manifest-path "$ROOT/guest-examples/c/cgen/Cargo.toml" --target-dir "$GT/cgen"
  (cd "$ROOT" && "$GT/cgen/release/cgen" wit wasmproc:process/guest guest-examples/c/gen >/dev/null)
}

SETUP_ONLY=0
SKIP_MISSING=${WASMPROC_SKIP_MISSING:-0}
REGEN_C=0
for arg in "$@"; do
  case "$arg" in
    --setup) SETUP_ONLY=1 ;;
    --skip-missing) SKIP_MISSING=1 ;;
    --regen-c-bindings) REGEN_C=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $arg (see --help)" ;;
  esac
done
[ "$SKIP_MISSING" = 1 ] && [ "$SETUP_ONLY" = 1 ] && die "--setup and --skip-missing exclude each other"

if [ "$SKIP_MISSING" != 1 ]; then
  setup_rust
  setup_python
  setup_js
  setup_js_lib
fi
[ "$SETUP_ONLY" = 1 ] && exit 0
[ "$REGEN_C" = 1 ] && regen_c_bindings

skipped=()
for lang in ${WASMPROC_GUEST_LANGS:-rust c python js}; do
  if ! "have_$lang"; then
    [ "$SKIP_MISSING" = 1 ] || die "the $lang guest toolchain is missing (run scripts/build-guests.sh --setup)"
    log "SKIPPING $lang guests: toolchain missing (--skip-missing)"
    skipped+=("$lang")
    continue
  fi
  case "$lang" in
    rust) build_rust_guests ;;
    c) build_c_guests ;;
    python) build_python_guests ;;
    js) build_js_guests; build_node_guests ;;
  esac
done
[ ${#skipped[@]} = 0 ] || log "skipped: ${skipped[*]}"
log "components: $(cd "$GT/components" && echo *.wasm)"
