#!/usr/bin/env bash
# Sets up a fresh Debian machine for phonehome's tests and runs them all.
# The Debian packages are the real tools the export tests hand our output to:
# dnsmasq (dnsmasq --test), unbound (unbound-checkconf) and BIND's
# named-checkzone (RPZ zones).
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends dnsmasq-base unbound bind9-utils
fi

go vet ./...
go test -race ./...
