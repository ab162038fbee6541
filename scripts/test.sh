#!/usr/bin/env bash
# Sets up a fresh Debian machine for phonehome's tests and runs them all.
# The Debian packages are the real tools the export tests hand our output to:
# dnsmasq (dnsmasq --test), unbound (unbound-checkconf) and BIND's
# named-checkzone (RPZ zones); dig (bind9-dnsutils) queries a running phonehome; Chromium drives the web page's browser test;
# promtool (prometheus), systemd-analyze (systemd) and docker-compose check
# the files in deploy/.
#
# knot is the authoritative server the resolver's answers are compared
# through, beside unbound's; postgresql gives the fleet tests a throwaway
# server each. Four are daemons Debian would start and enable at once:
# unbound and knot (which would then hold port 53), prometheus and
# postgresql. The tests start what they need themselves, on loopback ports
# of their own, so while installing, a policy-rc.d forbids starting any
# service, and the services of packages this script installed are disabled
# after (a package that was already installed is left as it was).
#
# Then each fuzzer runs for FUZZTIME (20s): the document parser, the
# packet path, the UDP loop's reader of plain queries, the upstream
# socket's test for plain answers, the DoH request reader, the host-name
# rule, the config loader and the list reader.
# Last, the soak's short form (bench/soak.sh, SOAK_DURATION=90 seconds of
# load, under 3 minutes in all; SOAK_DURATION=0 skips it): phonehome under
# load while its upstream fails, its config is reloaded, floods arrive and
# its log rotates. It needs root (a network namespace of its own) and
# dnsperf, iproute2 and curl, installed here.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(dnsperf iproute2 curl dnsmasq-base unbound knot knot-dnsutils bind9-utils bind9-dnsutils chromium prometheus systemd docker-compose postgresql)
daemons=(unbound knot prometheus postgresql)

if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  fresh=()
  for d in "${daemons[@]}"; do
    dpkg-query -W -f='${Status}' "$d" 2>/dev/null | grep -q 'install ok installed' || fresh+=("$d")
  done
  policy=/usr/sbin/policy-rc.d made_policy=""
  if [ ! -e "$policy" ]; then
    made_policy=1
    printf '#!/bin/sh\n# scripts/test.sh: no service starts while it installs packages\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
    trap '$sudo rm -f "$policy"' EXIT
  fi
  $sudo apt-get update
  $sudo apt-get install -y --no-install-recommends "${packages[@]}"
  for d in ${fresh[@]+"${fresh[@]}"}; do
    if [ -d /run/systemd/system ]; then
      $sudo systemctl disable --now "$d" >/dev/null 2>&1 || true
    else
      $sudo systemctl disable "$d" >/dev/null 2>&1 || true # offline: removes the unit's links
    fi
    $sudo update-rc.d -f "$d" remove >/dev/null 2>&1 || true
  done
  # Check it: a service left enabled or running would hold port 53.
  for d in ${fresh[@]+"${fresh[@]}"}; do
    if [ "$(systemctl is-enabled "$d" 2>/dev/null)" = enabled ] || ls /etc/rc[2-5].d/S*"$d" >/dev/null 2>&1 || pgrep -x "$d" >/dev/null || pgrep -x "${d}d" >/dev/null; then
      echo "scripts/test.sh: the $d service is still enabled or running after install" >&2
      exit 1
    fi
  done
  if [ -n "$made_policy" ]; then
    $sudo rm -f "$policy"
    trap - EXIT
  fi
else
  echo "no apt-get here: install dnsmasq, unbound, named-checkzone, dig, chromium, promtool, systemd-analyze and docker-compose yourself, or their tests are skipped" >&2
fi

go vet ./...
go test -race ./...

# A fuzzer fails when it finds an input that fails, and writes that input
# to testdata/fuzz/<Fuzzer>/. Go 1.26's fuzzing coordinator also fails,
# now and then, as -fuzztime runs out, with "context deadline exceeded"
# and no input (a race in Go itself, golang/go#75804, fixed in Go 1.27):
# that alone is reported and passed over, not taken for a finding.
fuzztime=${FUZZTIME:-20s}
for target in endpoints:FuzzParse endpoints:FuzzHostname resolver:FuzzHandler resolver:FuzzParseWire resolver:FuzzPlainAnswer resolver:FuzzDoHRequest resolver:FuzzDoH2Frames internal/configfile:FuzzParse policy:FuzzList; do
  pkg=${target%%:*} fuzzer=${target#*:}
  corpus="$pkg/testdata/fuzz/$fuzzer"
  before=$(ls "$corpus" 2>/dev/null | sort || true)
  log=$(mktemp)
  if go test -run '^$' -fuzz "^$fuzzer\$" -fuzztime "$fuzztime" "./$pkg" 2>&1 | tee "$log"; [ "${PIPESTATUS[0]}" -ne 0 ]; then
    after=$(ls "$corpus" 2>/dev/null | sort || true)
    if [ "$before" = "$after" ] && grep -q '^    context deadline exceeded$' "$log" && ! grep -q 'Failing input written' "$log"; then
      echo "scripts/test.sh: $fuzzer stopped with \"context deadline exceeded\" and no failing input: Go 1.26's fuzzing race (golang/go#75804), not a finding" >&2
    else
      rm -f "$log"
      exit 1
    fi
  fi
  rm -f "$log"
done

soak=${SOAK_DURATION:-90}
if [ "$soak" != 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    DURATION=$soak bash bench/soak.sh
  elif [ "${CI:-}" = true ]; then
    echo "scripts/test.sh: the soak (bench/soak.sh) needs root for its network namespace; CI must run as root" >&2
    exit 1
  else
    echo "scripts/test.sh: skipping the soak (bench/soak.sh): it needs root for its network namespace (sudo DURATION=90 bash bench/soak.sh)" >&2
  fi
fi
