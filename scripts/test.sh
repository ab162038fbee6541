#!/usr/bin/env bash
# Sets up a fresh Debian machine for phonehome's tests and runs them all.
# The Debian packages are the real tools the export tests hand our output to:
# dnsmasq (dnsmasq --test), unbound (unbound-checkconf) and BIND's
# named-checkzone (RPZ zones); dig (bind9-dnsutils) queries a running phonehome; Chromium drives the web page's browser test;
# promtool (prometheus), systemd-analyze (systemd) and docker-compose check
# the files in deploy/.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update
  $sudo apt-get install -y --no-install-recommends dnsmasq-base unbound bind9-utils bind9-dnsutils chromium prometheus systemd docker-compose
else
  echo "no apt-get here: install dnsmasq, unbound, named-checkzone, chromium, promtool, systemd-analyze and docker-compose yourself, or their tests are skipped" >&2
fi

go vet ./...
go test -race ./...
