#!/usr/bin/env bash
# Runs every evidex test on a fresh machine: installs what the tests need (the
# S3-compatible test server, poppler-utils, chromium with chromedriver and axe-core for
# the console's browser tests, PostgreSQL), starts PostgreSQL in a temporary
# directory, then builds and runs the whole workspace's tests.
# Safe to re-run: installed tools are reused, and the build directory is the one
# `cargo run -p evidex -- demo` uses (./target, or $CARGO_TARGET_DIR when set, as
# .ci/run does), so the README's two commands share one build.
set -euo pipefail
cd "$(dirname "$0")/.."

export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# S3-compatible server for the object-store tests (checks SigV4 like AWS does).
# 0.14.1 is the last release that builds with Rust 1.95.
if ! s3s-fs --version 2>/dev/null | grep -q '0\.14\.1'; then
  echo "==> installing s3s-fs 0.14.1 (S3 test server)"
  cargo install s3s-fs@0.14.1 --features binary --locked
fi

# poppler-utils (pdftotext, pdftoppm) reads the PDF reports back in the tests.
if ! command -v pdftotext >/dev/null 2>&1; then
  echo "==> installing poppler-utils (PDF text extraction for the report tests)"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get install -y -q poppler-utils >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q poppler-utils >/dev/null; }
fi

# openssl and sha256sum run the commands of every package's VERIFY.txt in the tests.
if ! command -v openssl >/dev/null 2>&1; then
  echo "==> installing openssl (the package checks in VERIFY.txt)"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get install -y -q openssl >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q openssl >/dev/null; }
fi

# promtool (Debian's prometheus) lints the /metrics exposition in the tests.
if ! command -v promtool >/dev/null 2>&1; then
  echo "==> installing prometheus (promtool checks the /metrics output)"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get install -y -q prometheus >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q prometheus >/dev/null; }
fi
export PROMTOOL="$(command -v promtool)"

# Chromium and its WebDriver server: the console tests drive a real headless browser.
if ! command -v chromedriver >/dev/null 2>&1; then
  echo "==> installing chromium and chromium-driver (the console's browser tests)"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q chromium chromium-driver >/dev/null; }
fi
export CHROMEDRIVER="$(command -v chromedriver)"

# axe-core, the accessibility engine the console tests inject into every page. It
# goes into a cache directory, not the repository: no third-party source is committed.
AXE_VERSION=4.10.3
NPM_CACHE="${TEST_NPM_CACHE:-$HOME/.cache/evidex-npm}"
AXE_DIR="$NPM_CACHE/node_modules/axe-core"
if ! grep -q "\"version\": \"$AXE_VERSION\"" "$AXE_DIR/package.json" 2>/dev/null; then
  echo "==> installing axe-core $AXE_VERSION into $NPM_CACHE"
  if ! command -v npm >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get install -y -q npm >/dev/null 2>&1 \
      || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q npm >/dev/null; }
  fi
  mkdir -p "$NPM_CACHE"
  npm install --prefix "$NPM_CACHE" --no-audit --no-fund --silent "axe-core@$AXE_VERSION"
fi
export AXE_CORE_JS="$AXE_DIR/axe.min.js"

# Python tools the tests drive, in a cached virtual environment: the Standard
# Webhooks reference library verifies every webhook signature evidex sends; moto's
# S3 server (with Object Lock and conditional writes) and boto3 (AWS's own client)
# receive deliveries and read them back.
VENV="${TEST_VENV:-$HOME/.cache/evidex-venv}"
if ! "$VENV/bin/python" -c "import standardwebhooks, boto3, moto.server, schemathesis, openapi_spec_validator; assert moto.__version__ == '5.2.5' and schemathesis.__version__ == '4.32.5'" >/dev/null 2>&1; then
  echo "==> preparing $VENV (standardwebhooks, moto server, boto3, schemathesis, openapi-spec-validator)"
  if ! command -v python3 >/dev/null 2>&1 || ! python3 -m venv --help >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get install -y -q python3 python3-venv >/dev/null 2>&1 \
      || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q python3 python3-venv >/dev/null; }
  fi
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "standardwebhooks==1.1.0" "moto[server]==5.2.5" \
    "schemathesis==4.32.5" "openapi-spec-validator==0.9.0"
fi
export STANDARDWEBHOOKS_PYTHON="$VENV/bin/python"
export TEST_PYTHON="$VENV/bin/python"

# PostgreSQL, the scale-out metadata store: the store contract suite runs on it as
# well as on SQLite. A throwaway cluster in a temporary directory, listening on
# loopback only, run as the `postgres` user (initdb refuses to run as root) and
# stopped when the tests end.
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
if [ -z "$(pg_bin)" ]; then
  echo "==> installing postgresql (the metadata store's scale-out database)"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get install -y -q postgresql >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q postgresql >/dev/null; }
fi
PG_BIN="$(pg_bin)"
PG_DIR="$(mktemp -d /tmp/evidex-pg.XXXXXX)"
PG_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
if [ "$(id -u)" = 0 ]; then chown postgres "$PG_DIR"; fi
echo "==> starting PostgreSQL ($("$PG_BIN/postgres" --version)) on 127.0.0.1:$PG_PORT"
as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres -A trust --no-sync >"$PG_DIR/initdb.log" 2>&1 \
  || { cat "$PG_DIR/initdb.log"; exit 1; }
as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
  -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" \
  start >/dev/null || { cat "$PG_DIR/server.log"; exit 1; }
# A second cluster that speaks TLS, with a certificate from a test CA made here
# (openssl): the metadata store must verify it, and refuse it without the CA.
PG_TLS_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
TLS_DIR="$PG_DIR/tls"
mkdir -p "$TLS_DIR"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=evidex test CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
  -keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.crt" >/dev/null 2>&1
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
  -keyout "$TLS_DIR/server.key" -out "$TLS_DIR/server.csr" >/dev/null 2>&1
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$TLS_DIR/ext.cnf"
openssl x509 -req -in "$TLS_DIR/server.csr" -CA "$TLS_DIR/ca.crt" -CAkey "$TLS_DIR/ca.key" \
  -CAcreateserial -days 2 -extfile "$TLS_DIR/ext.cnf" -out "$TLS_DIR/server.crt" >/dev/null 2>&1
chmod 600 "$TLS_DIR/server.key"
if [ "$(id -u)" = 0 ]; then chown -R postgres "$TLS_DIR"; fi
as_pg "$PG_BIN/initdb" -D "$PG_DIR/tls-data" -U postgres -A trust --no-sync >"$PG_DIR/initdb-tls.log" 2>&1 \
  || { cat "$PG_DIR/initdb-tls.log"; exit 1; }
as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/tls-data" -l "$PG_DIR/server-tls.log" -w -t 60 \
  -o "-p $PG_TLS_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c ssl=on -c ssl_cert_file=$TLS_DIR/server.crt -c ssl_key_file=$TLS_DIR/server.key" \
  start >/dev/null || { cat "$PG_DIR/server-tls.log"; exit 1; }
stop_pg() {
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/tls-data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
}
export TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
export TEST_POSTGRES_TLS_URL="postgres://postgres@localhost:$PG_TLS_PORT/postgres"
export TEST_POSTGRES_CA="$TLS_DIR/ca.crt"

echo "==> cargo test (workspace)"
log="$(mktemp)"
trap 'rm -f "$log"; stop_pg' EXIT
set +e
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run (cargo prints one per test binary, and the
# last of those is often a binary without tests).
passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s+=$1} END {print s+0}')
echo "tests: ${passed} passed, ${failed} failed"
exit "$status"
