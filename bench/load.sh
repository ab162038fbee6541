#!/usr/bin/env bash
# Load benchmark of issues 4 ("Speed"), 15 and 18: phonehome against Debian's
# unbound and dnsdist, all three forwarding to the same fast stub upstream
# (internal/stubdns), driven by dnsperf (over DNS over HTTPS, by
# bench/loadtls). Run from anywhere, as root:
#
#   bash bench/load.sh                      # 3 rounds of 10 s throughput and 10 s latency runs: ~10 min
#   DURATION=2 ROUNDS=1 bash bench/load.sh  # a quick look: ~1 min
#   TRANSPORT=dot bash bench/load.sh        # the clients over DNS over TLS (doh: DNS over HTTPS): ~12 min
#   PROFILE=1 bash bench/load.sh            # also CPU profiles of phonehome
#   REV=HEAD~3 bash bench/load.sh           # phonehome as of a commit
#   BARE=1 bash bench/load.sh               # phonehome without metrics, query log and activity
#   UPSTREAM=tls bash bench/load.sh         # the servers forward over DNS over TLS (or tcp: over TCP)
#   HISTORY=off bash bench/load.sh          # phonehome without its history database (on by default)
#   SERVERS=phonehome bash bench/load.sh    # only some of the servers: a quick before/after (no ratios)
#
# It needs root, 2 cores and Go; Debian's dnsperf, unbound, dnsdist, openssl,
# util-linux (taskset, unshare) and iproute2 (ip) it installs with apt-get
# when they are missing (with a policy-rc.d that keeps Debian from starting
# the unbound and dnsdist services, which it then disables). Variables
# of the environment reach phonehome too, so GOGC=400 bash bench/load.sh tries
# a GC setting.
#
# Everything runs inside a network namespace of its own with only loopback
# (unshare -n), so no packet can leave the machine whatever a config says, and
# inside a PID namespace, so every process it started dies with it. The whole
# run is bounded by `timeout`.
#
# Each server in turn is pinned to CPU 0 (SERVER_CPU); the load client
# (dnsperf or bench/loadtls) and the stub share CPU 1 (LOAD_CPU). All of them run at nice -19, so that other work on
# the machine (a build, a test run) takes as little of those cores as it can;
# the "checks" below the table say how much it still took. For each round,
# workload and server, a fresh server process gets:
#   1. a check of its answers over TRANSPORT (bench/loadtls check): a
#      sinkholed name's A and AAAA must be NOERROR with 0.0.0.0 and :: alone
#      and reach no upstream, an ordinary name NOERROR with the stub's
#      address; anything else stops the run;
#   2. a warm-up pass (hot: the 200 names once, so the run is all cache hits);
#   3. a throughput run: the load client as fast as the server answers,
#      OUTSTANDING (200) queries in flight, DURATION s;
#      CPU time per answered query from /proc/PID/stat (utime+stime);
#   4. a latency run at a fixed LAT_QPS (2,000 q/s) for LAT_DURATION s with
#      `dnsperf -v`, whose per-query lines carry each latency, to take p50/p99
#      from (dnsperf 2.10 prints only the mean and standard deviation; it has
#      no histogram option); CPU time per query at that rate too; the
#      answers other than NOERROR in both runs are counted (want none);
#   5. VmRSS from /proc/PID/status; then, over dot and doh, HOLD_CONNS (1,000)
#      idle encrypted connections opened to it (bench/loadtls hold: one query
#      on each, so every handshake is done), VmRSS again while they are open,
#      and a count of those it kept open; then SIGTERM.
# Rounds interleave: phonehome, unbound and dnsdist hot, then the three cold.
# The table gives the median over rounds of each figure, and the ratios
# phonehome/unbound and phonehome/dnsdist.
#
# The three servers, as alike as they can be made: one thread each where the
# server has the choice (unbound num-threads 1; dnsdist's one UDP listener,
# one TCP worker thread and one DoH thread; phonehome's GOMAXPROCS follows
# the one core it is pinned to), a cache (phonehome's default of 20,000
# answers; unbound's default sizes; a dnsdist packet cache of 20,000 entries
# and phonehome's max_ttl of 24 h), and the names phonehome sinkholes
# answered A 0.0.0.0 / AAAA :: (phonehome's default null_ip, TTL 60 s):
# unbound with local-zone always_null, dnsdist with a SpoofAction on an exact
# QNameSetRule. dnsdist runs with --supervised (no console), no controlSocket
# and no webserver, no security polling, and its backend forced up
# (setUp(): no health-check queries to the stub).
#
# TRANSPORT says how the clients reach the servers: udp (the default: plain
# DNS), dot (DNS over TLS) or doh (DNS over HTTPS: GET /dns-query?dns=... on
# HTTP/2). For dot and doh the script makes a throwaway CA and a
# certificate for bench.test and 127.0.0.1 (ECDSA P-256, openssl, in the
# work directory), and each server listens on that transport too: phonehome
# with tls_listen or https_listen, tls_cert and tls_key; unbound with
# tls-port or https-port, tls-service-key and tls-service-pem; dnsdist with
# addTLSLocal or addDOHLocal. A server whose Debian build lacks the
# transport (unbound without libnghttp2 for doh; dnsdist without
# dns-over-tls or dns-over-https) is left out, with a message.
#
# LOAD_CLIENT says what loads them over dot and doh: dnsperf (-m dot, -m
# doh; the default for dot) or bench/loadtls perf (the default for doh),
# which takes dnsperf's flags and prints the lines of its output this
# script reads. dnsperf 2.10's DNS over HTTPS client takes one answer per
# read of a connection (DNS-OARC/dnsperf issue 240): answers that arrive
# together wait for a later read or time out, so it measures itself (here
# it got 8 answers a second from dnsdist and lost the rest, and lost some
# of phonehome's). LOAD_CLIENT=loadtls with dot checks dnsperf's DNS over TLS
# figures. dnsperf checks no certificate; loadtls (the load, the answer check
# and the held connections) checks it against the CA. Either opens CLIENTS
# (8) connections, over which the OUTSTANDING queries are spread (phonehome
# allows 16 connections from one address and 32 HTTP/2 streams on one).
#
# The held connections come from HOLD_CONNS / 10 addresses from 127.0.1.1
# on, 10 from each, under phonehome's bound of 16 from one address. Its bound of
# 256 connections in all is raised to HOLD_CONNS + 64 with
# access.max_connections (a REV from before that key cannot hold them), and
# the table says so. unbound gets incoming-num-tcp of twice
# HOLD_CONNS + 64, since it cuts idle connections at once when fewer than
# half its TCP slots are free; dnsdist setTCPRecvTimeout(30), so that it
# keeps an idle connection 30 s, as phonehome and unbound do (its default is
# 2 s). Each server's open-file limit is the hard limit.
#
# UPSTREAM says how the servers reach the stub: udp (the default: plain DNS,
# TCP only after a truncated answer), tcp (tcp:// for phonehome,
# forward-tcp-upstream for unbound, tcpOnly for dnsdist) or tls (DNS over TLS:
# tls://, forward-tls-upstream, and dnsdist's tls="openssl"). For tls the stub
# serves DNS over TLS on port 5303 with a self-signed certificate it makes at
# start and writes to $work/stub-ca.pem; unbound trusts it through
# tls-cert-bundle, dnsdist through caStore, phonehome through SSL_CERT_FILE,
# which Go's crypto/x509 reads instead of the system's CA bundle (as
# upstream_tls_ca does from the config, but SSL_CERT_FILE works with any REV,
# so older commits can be measured).
set -euo pipefail

# Tunables (environment).
DURATION=${DURATION:-10}         # seconds of each throughput run
LAT_DURATION=${LAT_DURATION:-$((DURATION < 10 ? DURATION : 10))} # seconds of each fixed-rate latency run
LAT_QPS=${LAT_QPS:-2000}         # rate of the latency runs
ROUNDS=${ROUNDS:-3}              # rounds; medians are reported
OUTSTANDING=${OUTSTANDING:-200}  # dnsperf -q: queries in flight in throughput runs, over all CLIENTS
SERVER_CPU=${SERVER_CPU:-0}      # core of the server under test
LOAD_CPU=${LOAD_CPU:-1}          # core of the load client and the stub upstream
NICE=${NICE:--19}                # nice value of servers, stub and load client: other work on the machine yields to them
PROFILE=${PROFILE:-0}            # 1: run phonehome's request path under a CPU profiler
REV=${REV:-}                     # build phonehome from this git revision, not the work tree
BARE=${BARE:-0}                  # 1: phonehome without per-query metrics, query log and web page activity
OUT=${OUT:-}                     # keep raw outputs (and profiles) here
UPSTREAM=${UPSTREAM:-udp}        # how the servers forward to the stub: udp, tcp or tls
HISTORY=${HISTORY:-on}           # off: "history: off" (only for revisions that have a history); on: the default, in the work directory
TRANSPORT=${TRANSPORT:-udp}      # how the clients ask the servers: udp, dot (DNS over TLS) or doh (DNS over HTTPS)
SERVERS=${SERVERS:-}             # the servers to run, of phonehome, unbound and dnsdist: all that can serve TRANSPORT when empty
if [[ $TRANSPORT == udp ]]; then
	CLIENTS=${CLIENTS:-1}        # dnsperf -c: its sockets (udp), its connections (dot, doh)
	HOLD_CONNS=${HOLD_CONNS:-0}  # idle encrypted connections held open while each server's memory is read (dot, doh only)
else
	CLIENTS=${CLIENTS:-8}
	HOLD_CONNS=${HOLD_CONNS:-1000}
fi
HOLD_SECONDS=${HOLD_SECONDS:-3}  # how long they are held open, idle (memory is read after 1 s)
case $TRANSPORT in               # what loads the servers: dnsperf (udp, dot), or bench/loadtls perf (dot, doh)
doh) LOAD_CLIENT=${LOAD_CLIENT:-loadtls} ;;
*) LOAD_CLIENT=${LOAD_CLIENT:-dnsperf} ;;
esac

STUB_PORT=5300 PH_PORT=5301 UB_PORT=5302 STUB_TLS_PORT=5303 DD_PORT=5304 # only ever bound on 127.0.0.1 in the namespace
# Each server's DNS over TLS port is its plain port + 10, DNS over HTTPS + 20.
case $TRANSPORT in
udp) PORT_OFFSET=0 ;;
dot) PORT_OFFSET=10 ;;
doh) PORT_OFFSET=20 ;;
*)
	echo "bench/load.sh: TRANSPORT=$TRANSPORT: want udp, dot or doh" >&2
	exit 1
	;;
esac
case $UPSTREAM in
udp) PH_UPSTREAM=127.0.0.1:$STUB_PORT ;;
tcp) PH_UPSTREAM=tcp://127.0.0.1:$STUB_PORT ;;
tls) PH_UPSTREAM=tls://127.0.0.1:$STUB_TLS_PORT#stubdns.test ;;
*)
	echo "bench/load.sh: UPSTREAM=$UPSTREAM: want udp, tcp or tls" >&2
	exit 1
	;;
esac
if [[ $LOAD_CLIENT != dnsperf && ($LOAD_CLIENT != loadtls || $TRANSPORT == udp) ]]; then
	echo "bench/load.sh: LOAD_CLIENT=$LOAD_CLIENT: want dnsperf, or loadtls with TRANSPORT=dot or doh" >&2
	exit 1
fi
if [[ $TRANSPORT == udp && $HOLD_CONNS != 0 ]]; then
	echo "bench/load.sh: HOLD_CONNS holds encrypted connections: it needs TRANSPORT=dot or doh" >&2
	exit 1
fi

# ---------------------------------------------------------------------------
# Outside the namespace: check tools, build, generate inputs, re-execute.
# ---------------------------------------------------------------------------
if [[ -z ${BENCH_INSIDE:-} ]]; then
	here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
	# shellcheck source=bench/lib.sh
	source "$here/lib.sh"
	repo=$(cd "$here/.." && pwd)

	# Step 1: the tools: root, two cores, and Debian's packages.
	if [[ $(id -u) != 0 ]]; then
		echo "bench/load.sh: run as root: it makes its own network namespace (unshare -n)" >&2
		exit 1
	fi
	export PATH=$PATH:/usr/sbin
	have() { command -v "$1" >/dev/null; }
	if ! have dnsperf || ! have unbound || ! have unbound-checkconf || ! have dnsdist || ! have openssl ||
		! have taskset || ! have unshare || ! have ip; then
		echo "installing dnsperf, unbound, dnsdist, openssl, util-linux and iproute2 with apt-get..." >&2
		# Debian starts and enables the daemons it installs: unbound would
		# answer on port 53, and dnsdist try to. A policy-rc.d forbids
		# starting any service meanwhile (as scripts/test.sh does), and the
		# services of those installed here are disabled after.
		fresh=()
		for d in unbound dnsdist; do
			dpkg-query -W -f='${Status}' "$d" 2>/dev/null | grep -q 'install ok installed' || fresh+=("$d")
		done
		policy=/usr/sbin/policy-rc.d made_policy=""
		if [[ ! -e $policy ]]; then
			made_policy=1
			trap 'rm -f "$policy"' EXIT
			printf '#!/bin/sh\n# bench/load.sh: no service starts while it installs packages\nexit 101\n' >"$policy"
			chmod 755 "$policy"
		fi
		rc=0
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dnsperf unbound dnsdist openssl util-linux iproute2 >/dev/null; } || rc=$?
		for d in ${fresh[@]+"${fresh[@]}"}; do systemctl disable "$d" >/dev/null 2>&1 || true; done
		if [[ -n $made_policy ]]; then
			rm -f "$policy"
			trap - EXIT
		fi
		((rc == 0)) || exit "$rc"
	fi
	missing=()
	have dnsperf || missing+=("dnsperf (Debian package dnsperf)")
	have unbound || missing+=("unbound (Debian package unbound)")
	have unbound-checkconf || missing+=("unbound-checkconf (Debian package unbound)")
	have dnsdist || missing+=("dnsdist (Debian package dnsdist)")
	have openssl || missing+=("openssl (Debian package openssl)")
	for t in taskset unshare; do have $t || missing+=("$t (Debian package util-linux)"); done
	have ip || missing+=("ip (Debian package iproute2)")
	have go || missing+=("go (the Go toolchain of go.mod)")
	if ((${#missing[@]})); then
		printf 'bench/load.sh: missing: %s\n' "${missing[@]}" >&2
		exit 1
	fi
	if [[ $(nproc) -lt 2 ]]; then
		echo "bench/load.sh: needs 2 cores (server on CPU $SERVER_CPU, load on CPU $LOAD_CPU)" >&2
		exit 1
	fi

	# The servers, less any whose Debian build cannot serve TRANSPORT.
	servers=(phonehome)
	dd_features=$(dnsdist --version 2>&1 | sed -n 's/^Enabled features: //p')
	case $TRANSPORT in
	doh)
		if unbound -V 2>&1 | grep -q -- --with-libnghttp2; then
			servers+=(unbound)
		else
			echo "bench/load.sh: leaving unbound out: this unbound was built without libnghttp2, so it has no DNS over HTTPS" >&2
		fi
		if [[ " $dd_features " == *" dns-over-https("* ]]; then
			servers+=(dnsdist)
		else
			echo "bench/load.sh: leaving dnsdist out: this dnsdist was built without DNS over HTTPS (features: $dd_features)" >&2
		fi
		;;
	dot)
		servers+=(unbound)
		if [[ " $dd_features " == *" dns-over-tls("* ]]; then
			servers+=(dnsdist)
		else
			echo "bench/load.sh: leaving dnsdist out: this dnsdist was built without DNS over TLS (features: $dd_features)" >&2
		fi
		;;
	udp) servers+=(unbound dnsdist) ;;
	esac
	if [[ $UPSTREAM == tls && " ${servers[*]} " == *" dnsdist "* && " $dd_features " != *" dns-over-tls("* ]]; then
		echo "bench/load.sh: leaving dnsdist out: this dnsdist was built without DNS over TLS, so it cannot forward over it" >&2
		keep=()
		for s in "${servers[@]}"; do [[ $s == dnsdist ]] || keep+=("$s"); done
		servers=("${keep[@]}")
	fi

	if [[ -n $SERVERS ]]; then
		keep=()
		for s in $SERVERS; do
			case " ${servers[*]} " in
			*" $s "*) keep+=("$s") ;;
			*)
				echo "bench/load.sh: SERVERS: $s is not one of the servers that can run here over $TRANSPORT: ${servers[*]}" >&2
				exit 1
				;;
			esac
		done
		servers=("${keep[@]}")
	fi

	work=$(mktemp -d /tmp/phonehome-bench.XXXXXX)
	trap 'rm -rf "$work"' EXIT
	mkdir -p "$work/bin" "$work/logs" "$work/runs"
	if [[ -n $OUT || $PROFILE == 1 ]]; then
		OUT=${OUT:-$here/out/$(date +%Y%m%d-%H%M%S)}
		mkdir -p "$OUT"
		OUT=$(cd "$OUT" && pwd)
	fi

	# Step 2: build phonehome, the stub upstream and bench/loadtls, here,
	# where the module cache is reachable. With PROFILE=1 phonehome is built
	# with one more file in its main package, added by `go build -overlay`
	# (the source tree is not touched), that imports bench/profile: SIGUSR2
	# then starts and stops a CPU profile. phonehome is built as the
	# Dockerfile builds it (static, without cgo, trimmed): what its memory
	# is measured of is the binary people run, not one linked with libc.
	echo "building phonehome${REV:+ at $REV}, stubdns and loadtls..." >&2
	(cd "$repo" && go build -o "$work/bin/stubdns" ./internal/stubdns && go build -o "$work/bin/loadtls" ./bench/loadtls)
	src=$repo
	if [[ -n $REV ]]; then
		src=$work/src
		mkdir -p "$src"
		git -C "$repo" archive "$REV" | tar -x -C "$src"
	fi
	overlay=()
	if [[ $PROFILE == 1 ]]; then
		printf 'package main\n\nimport _ "github.com/phonehome/phonehome/bench/profile"\n' >"$work/benchprofile.go"
		overlay+=("$src/cmd/phonehome/zz_benchprofile.go" "$work/benchprofile.go"
			"$src/bench/profile/profile.go" "$here/profile/profile.go")
	fi
	# serve.go, changed in a copy that replaces it in the overlay. With
	# BARE=1 the resolver gets no metrics registry and no observers (query
	# log, activity): the "before" of what counting costs (issue 5).
	cp "$src/cmd/phonehome/serve.go" "$work/serve.go"
	if [[ $BARE == 1 ]]; then
		sed -i 's|Registry: reg, Version: version, Observers: observers|Version: version /* bench/load.sh BARE=1 */|' "$work/serve.go"
		grep -q 'BARE=1' "$work/serve.go" || { echo "bench/load.sh: BARE=1: serve.go has changed; update the sed line" >&2; exit 1; }
	fi
	# With more than 192 HOLD_CONNS, phonehome's bound of 256 connections in
	# all (DNS over TCP, TLS and HTTPS together) is raised to HOLD_CONNS + 64
	# (access.max_connections, in the config below).
	PH_TCP_CONNS=0
	if ((HOLD_CONNS + 64 > 256)); then
		PH_TCP_CONNS=$((HOLD_CONNS + 64))
	fi
	if ! cmp -s "$src/cmd/phonehome/serve.go" "$work/serve.go"; then
		overlay+=("$src/cmd/phonehome/serve.go" "$work/serve.go")
	fi
	if ((${#overlay[@]})); then
		{
			printf '{"Replace": {'
			for ((i = 0; i < ${#overlay[@]}; i += 2)); do
				((i)) && printf ', '
				printf '"%s": "%s"' "${overlay[i]}" "${overlay[i + 1]}"
			done
			printf '}}\n'
		} >"$work/overlay.json"
		(cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -overlay "$work/overlay.json" -o "$work/bin/phonehome" ./cmd/phonehome)
	else
		(cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/bin/phonehome" ./cmd/phonehome)
	fi

	# The certificate of the encrypted listeners (dot, doh): a throwaway CA
	# and a certificate it signs for bench.test and 127.0.0.1, both ECDSA
	# P-256, valid for 2 days. bench/loadtls trusts the CA alone.
	if [[ $TRANSPORT != udp ]]; then
		mkdir -p "$work/tls"
		(
			cd "$work/tls"
			openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
				-subj "/CN=phonehome bench CA" -keyout ca.key -out ca.pem 2>/dev/null
			openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
				-subj "/CN=bench.test" -keyout server.key -out server.csr 2>/dev/null
			printf 'basicConstraints = CA:FALSE\nkeyUsage = digitalSignature\nextendedKeyUsage = serverAuth\nsubjectAltName = DNS:bench.test, IP:127.0.0.1\n' >server.ext
			openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial 2 -days 2 -extfile server.ext -out server.pem 2>/dev/null
			openssl verify -CAfile ca.pem server.pem >/dev/null
		) || { echo "bench/load.sh: openssl could not make the certificate" >&2; exit 1; }
	fi
	cert=$work/tls/server.pem key=$work/tls/server.key

	# The phonehome config: one loopback listener (and, for dot and doh, one
	# encrypted one), the stub as its only upstream (over UPSTREAM), no rate
	# limit, no HTTP server, the default policy (telemetry sinkholed) and
	# the default cache.
	cat >"$work/phonehome.yaml" <<-EOF
		listen: ["127.0.0.1:$PH_PORT"]
		upstreams: ["$PH_UPSTREAM"]
		http: ""
		access:
		  rate_limit: 0
	EOF
	if ((PH_TCP_CONNS > 0)); then printf '  max_connections: %d\n' "$PH_TCP_CONNS" >>"$work/phonehome.yaml"; fi
	if [[ $HISTORY == off ]]; then echo 'history: off' >>"$work/phonehome.yaml"; fi
	case $TRANSPORT in
	dot) printf 'tls_listen: ["127.0.0.1:%s"]\n' $((PH_PORT + PORT_OFFSET)) >>"$work/phonehome.yaml" ;;
	doh) printf 'https_listen: ["127.0.0.1:%s"]\n' $((PH_PORT + PORT_OFFSET)) >>"$work/phonehome.yaml" ;;
	esac
	if [[ $TRANSPORT != udp ]]; then printf 'tls_cert: "%s"\ntls_key: "%s"\n' "$cert" "$key" >>"$work/phonehome.yaml"; fi

	# The names phonehome sinkholes: the catalog's telemetry patterns that are
	# single host names, kept only when `phonehome check` with this config
	# says sinkhole (protected ones are never sinkholed). Wildcard patterns
	# are left out: the workload asks for exact names only.
	sinkholed_names "$work/bin/phonehome" "$work/phonehome.yaml" "$work/sinkholed"

	# The unbound config: the same upstream, one thread, default cache sizes,
	# iterator only (no DNSSEC validation, as phonehome does none), and the
	# same names answered 0.0.0.0 / :: with local-zone always_null. For dot
	# and doh, an encrypted listener too, and TCP slots for twice the held
	# connections (unbound cuts idle ones at once when fewer than half its
	# slots are free).
	{
		cat <<-EOF
			server:
			    interface: 127.0.0.1@$UB_PORT
			    do-ip6: no
			    num-threads: 1
			    access-control: 127.0.0.0/8 allow
			    do-not-query-localhost: no
			    module-config: "iterator"
			    do-daemonize: no
			    username: ""
			    chroot: ""
			    directory: "$work"
			    pidfile: "$work/unbound.pid"
			    use-syslog: no
			    logfile: ""
			    verbosity: 0
		EOF
		[[ $UPSTREAM == tls ]] && printf '    tls-cert-bundle: "%s"\n' "$work/stub-ca.pem"
		if [[ $TRANSPORT != udp ]]; then
			printf '    interface: 127.0.0.1@%s\n' $((UB_PORT + PORT_OFFSET))
			printf '    tls-service-key: "%s"\n    tls-service-pem: "%s"\n' "$key" "$cert"
			printf '    incoming-num-tcp: %s\n' $((2 * HOLD_CONNS + 64))
		fi
		case $TRANSPORT in
		dot) printf '    tls-port: %s\n' $((UB_PORT + PORT_OFFSET)) ;;
		doh) printf '    https-port: %s\n    http-endpoint: "/dns-query"\n' $((UB_PORT + PORT_OFFSET)) ;;
		esac
		while read -r n; do printf '    local-zone: "%s." always_null\n' "$n"; done <"$work/sinkholed"
		cat <<-EOF
			remote-control:
			    control-enable: no
			forward-zone:
			    name: "."
		EOF
		case $UPSTREAM in
		udp) printf '    forward-addr: 127.0.0.1@%s\n' "$STUB_PORT" ;;
		tcp) printf '    forward-tcp-upstream: yes\n    forward-addr: 127.0.0.1@%s\n' "$STUB_PORT" ;;
		tls) printf '    forward-tls-upstream: yes\n    forward-addr: 127.0.0.1@%s#stubdns.test\n' "$STUB_TLS_PORT" ;;
		esac
	} >"$work/unbound.conf"
	unbound-checkconf "$work/unbound.conf" >/dev/null

	# The dnsdist config (Lua), checked inside the namespace once the stub
	# has written its CA: the same upstream, forced up; a packet cache of
	# phonehome's default size and max_ttl; the same names answered
	# 0.0.0.0 / :: (TTL 60 s, phonehome's sinkhole TTL) by a SpoofAction
	# before the cache; no console or web server, which dnsdist opens only
	# when told to (controlSocket, webserver).
	{
		cat <<-EOF
			-- bench/load.sh: dnsdist beside phonehome and unbound.
			setSecurityPollSuffix("")      -- no security polling (a query for secpoll.powerdns.com)
			setLocal("127.0.0.1:$DD_PORT")
			setMaxTCPClientThreads(1)      -- one TCP worker thread: DNS over TCP and TLS
			setTCPRecvTimeout(30)          -- an idle client connection kept 30 s, as phonehome and unbound keep it (default 2 s)
		EOF
		case $TRANSPORT in
		dot) printf 'addTLSLocal("127.0.0.1:%s", "%s", "%s")\n' $((DD_PORT + PORT_OFFSET)) "$cert" "$key" ;;
		doh) printf 'addDOHLocal("127.0.0.1:%s", "%s", "%s", "/dns-query")\n' $((DD_PORT + PORT_OFFSET)) "$cert" "$key" ;;
		esac
		case $UPSTREAM in
		udp) printf 'newServer({address="127.0.0.1:%s", name="stub"}):setUp()\n' "$STUB_PORT" ;;
		tcp) printf 'newServer({address="127.0.0.1:%s", name="stub", tcpOnly=true}):setUp()\n' "$STUB_PORT" ;;
		tls) printf 'newServer({address="127.0.0.1:%s", name="stub", tls="openssl", subjectName="stubdns.test", caStore="%s", validateCertificates=true}):setUp()\n' \
			"$STUB_TLS_PORT" "$work/stub-ca.pem" ;;
		esac
		cat <<-EOF
			getPool(""):setCache(newPacketCache(20000, {maxTTL=86400}))
			local sinkholed = newDNSNameSet()
		EOF
		while read -r n; do printf 'sinkholed:add(newDNSName("%s."))\n' "$n"; done <"$work/sinkholed"
		echo 'addAction(QNameSetRule(sinkholed), SpoofAction({"0.0.0.0", "::"}, {ttl=60}))'
	} >"$work/dnsdist.conf"

	# The workloads, as dnsperf input ("name type" per line).
	# hot: 200 names looped; every 5th line (20%) a sinkholed telemetry name,
	# A and AAAA in turn; the rest 160 ordinary names the stub answers.
	mapfile -t tel <"$work/sinkholed"
	for ((i = 0, j = 0, k = 0; i < 200; i++)); do
		if ((i % 5 == 4)); then
			t=A; (((k / ${#tel[@]}) % 2)) && t=AAAA
			echo "${tel[k % ${#tel[@]}]} $t"; ((k++)) || true
		else
			echo "host$((++j)).example.com A"
		fi
	done >"$work/hot.txt"
	# cold: a million names asked once each, so every query misses the cache.
	awk 'BEGIN { for (i = 1; i <= 1000000; i++) printf "r%d.cold.example A\n", i }' >"$work/cold.txt"
	# cold latency runs use names of their own; warm-up of cold servers too.
	awk -v n=$((LAT_QPS * LAT_DURATION * 2 + 1000)) \
		'BEGIN { for (i = 1; i <= n; i++) printf "l%d.cold.example A\n", i }' >"$work/coldlat.txt"
	awk 'BEGIN { for (i = 1; i <= 100; i++) printf "w%d.warm.example A\n", i }' >"$work/warm.txt"
	echo "probe.example A" >"$work/probe.txt"

	warn_if_busy

	# Step 3: run the rest inside new network and PID namespaces, bounded in
	# time: per round, two workloads of a throughput and a latency run for
	# each server, plus start-up, checks, warm-up and the held connections.
	per_case=$((DURATION + LAT_DURATION + 20))
	((HOLD_CONNS > 0)) && per_case=$((per_case + HOLD_SECONDS + 60))
	limit=$((ROUNDS * 2 * ${#servers[@]} * per_case + 60))
	echo "running $ROUNDS round(s) of ${DURATION}s throughput + ${LAT_DURATION}s latency runs over $TRANSPORT against ${servers[*]} (at most ${limit}s)..." >&2
	rc=0
	in_namespace "$limit" BENCH_INSIDE=1 "BENCH_WORK=$work" "DURATION=$DURATION" "LAT_DURATION=$LAT_DURATION" "LAT_QPS=$LAT_QPS" \
		"ROUNDS=$ROUNDS" "OUTSTANDING=$OUTSTANDING" "OUT=$OUT" "NICE=$NICE" "SERVER_CPU=$SERVER_CPU" "LOAD_CPU=$LOAD_CPU" "PROFILE=$PROFILE" \
		"UPSTREAM=$UPSTREAM" "HISTORY=$HISTORY" "TRANSPORT=$TRANSPORT" "CLIENTS=$CLIENTS" "HOLD_CONNS=$HOLD_CONNS" \
		"HOLD_SECONDS=$HOLD_SECONDS" "LOAD_CLIENT=$LOAD_CLIENT" "BENCH_SERVERS=${servers[*]}" "PH_TCP_CONNS=$PH_TCP_CONNS" || rc=$?

	if [[ -n $OUT ]]; then
		cp -r "$work/runs" "$work/logs" "$work/results.tsv" "$work/hot.txt" "$work/unbound.conf" \
			"$work/dnsdist.conf" "$work/phonehome.yaml" "$OUT/" 2>/dev/null || true
	fi
	if ((rc != 0)); then
		echo "bench/load.sh: the benchmark failed (exit $rc); server logs:" >&2
		tail -n 5 "$work"/logs/*.log >&2 || true
		exit "$rc"
	fi

	# Where phonehome's CPU time goes (PROFILE=1), from round 1.
	if [[ $PROFILE == 1 ]]; then
		for wl in hot cold; do
			p=$OUT/profiles/phonehome-$wl-r1.pprof
			[[ -s $p ]] || continue
			echo
			echo "== phonehome CPU profile of the $wl throughput run, round 1: by cumulative time =="
			(cd "$src" && go tool pprof -top -cum -nodecount=40 "$work/bin/phonehome" "$p" 2>/dev/null) | sed -n '5,50p'
			echo "== the same, by own (flat) time =="
			(cd "$src" && go tool pprof -top -nodecount=20 "$work/bin/phonehome" "$p" 2>/dev/null) | sed -n '7,30p'
		done
		echo
		echo "profiles kept in $OUT/profiles (go tool pprof -http=: FILE)"
	fi
	exit 0
fi

# ---------------------------------------------------------------------------
# Inside the namespaces: only loopback exists here.
# ---------------------------------------------------------------------------
work=$BENCH_WORK
cd "$work"
ip link set lo up
bin=$work/bin
tck=$(getconf CLK_TCK)
[[ $PROFILE == 1 ]] && mkdir -p "$OUT/profiles"
read -r -a servers <<<"$BENCH_SERVERS"
# Room for the held connections: every process started from here on gets
# the hard limit of open files (unbound raises its own; dnsdist does not).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ticks PID: utime+stime of the whole process (all threads), in clock ticks.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# rss_kb PID: resident memory now.
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
# udp_drops: UDP datagrams dropped in this namespace so far: for want of
# room in a receive buffer (RcvbufErrors) or of a socket (NoPorts).
udp_drops() { awk '$1 == "Udp:" && $2 ~ /^[0-9]/ { print $3 + $6 }' /proc/net/snmp; }
# cpu_busy CPU: "busy total" jiffies of one core so far, from /proc/stat.
cpu_busy() { awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 }' /proc/stat; }

# Prefixes that run a command pinned to a core at the benchmark's priority;
# nice and taskset exec it, so $! of "${on_srv[@]}" CMD & is CMD's PID.
on_srv=(nice -n "$NICE" taskset -c "$SERVER_CPU")
on_load=(nice -n "$NICE" taskset -c "$LOAD_CPU")
# perf OUTFILE PORT ARGS...: dnsperf's ARGS for the load client on the load
# core, over TRANSPORT. dnsperf checks no certificate, and over doh asks
# GET /dns-query?dns=...; bench/loadtls perf does the same, checking the
# certificate. Its exit status is not looked at (a server still starting
# fails a probe): the statistics in OUTFILE are.
perf() {
	local out=$1 port=$2 mode=()
	shift 2
	if [[ $LOAD_CLIENT == loadtls ]]; then
		"${on_load[@]}" "$bin/loadtls" perf -transport "$TRANSPORT" -server "127.0.0.1:$port" \
			-ca "$work/tls/ca.pem" -host bench.test -t 2 "$@" >"$out" 2>&1 || true
		return
	fi
	case $TRANSPORT in
	dot) mode=(-m dot) ;;
	doh) mode=(-m doh -O "doh-uri=https://bench.test:$port/dns-query") ;;
	esac
	"${on_load[@]}" dnsperf "${mode[@]}" -s 127.0.0.1 -p "$port" -t 2 "$@" >"$out" 2>&1 || true
}
# stat_of FILE KEY: a number from dnsperf's statistics.
stat_of() { awk -v k="$2" 'index($0, k) { sub(/.*: */, ""); print $1 + 0; exit }' "$1"; }
# noerror_of FILE: how many answers dnsperf counted as NOERROR.
noerror_of() { awk '/Response codes:/ { for (i = 1; i < NF; i++) if ($i == "NOERROR") n = $(i + 1) + 0 } END { print n + 0 }' "$1"; }

# The stub upstream, on the load core for the whole run. On SIGUSR1 it logs
# how many queries it has answered, to count what each server forwards. With
# UPSTREAM=tls it also serves DNS over TLS, with the certificate it writes to
# stub-ca.pem, which every server trusts.
stub_args=(-listen "127.0.0.1:$STUB_PORT")
[[ $UPSTREAM == tls ]] && stub_args+=(-tls "127.0.0.1:$STUB_TLS_PORT" -ca "$work/stub-ca.pem")
"${on_load[@]}" "$bin/stubdns" "${stub_args[@]}" 2>"$work/logs/stub.log" &
stub=$!
stub_count() {
	local before
	before=$(grep -c answered "$work/logs/stub.log" || true)
	kill -USR1 "$stub"
	for _ in $(seq 100); do
		(($(grep -c answered "$work/logs/stub.log" || true) > before)) && break
		sleep 0.01
	done
	awk '/^answered/ { n = $2 } END { print n + 0 }' "$work/logs/stub.log"
}
for _ in $(seq 50); do grep -q listening "$work/logs/stub.log" 2>/dev/null && break; sleep 0.1; done
# stub_count_settled: stub_count once the stub has answered nothing new for
# 0.3 s (3 s at most).
stub_count_settled() {
	local a b
	b=$(stub_count)
	for _ in $(seq 10); do
		sleep 0.3
		a=$b b=$(stub_count)
		((a == b)) && break
	done
	echo "$b"
}

# dnsdist's config, now that the stub has written the CA it may name.
if [[ " ${servers[*]} " == *" dnsdist "* ]] && ! dnsdist --check-config -C "$work/dnsdist.conf" >"$work/logs/dnsdist-check.log" 2>&1; then
	echo "dnsdist refuses its config:" >&2
	cat "$work/logs/dnsdist-check.log" >&2
	exit 1
fi

# loadtls MODE ARGS...: bench/loadtls on the load core, asking the server on
# $port over TRANSPORT and checking its certificate against the bench CA.
loadtls() {
	local what=$1
	shift
	"${on_load[@]}" "$bin/loadtls" "$what" -transport "$TRANSPORT" -server "127.0.0.1:$port" \
		-ca "$work/tls/ca.pem" -host bench.test "$@"
}
sink_name=$(head -n 1 "$work/sinkholed")

# start_server NAME WORKLOAD ROUND: start a fresh server on the server core,
# wait until it answers over TRANSPORT and check its answers; sets srv (its
# PID) and port.
start_server() {
	local log=$work/logs/$1-$2-r$3.log
	case $1 in
	phonehome)
		# Its query log (stdout by default) goes to a file of its own.
		port=$((PH_PORT + PORT_OFFSET))
		# Its history (on unless HISTORY=off) goes where systemd's
		# StateDirectory would put it: here, in the work directory.
		mkdir -p "$work/state"
		local penv=("STATE_DIRECTORY=$work/state")
		[[ $UPSTREAM == tls ]] && penv+=("SSL_CERT_FILE=$work/stub-ca.pem")
		if [[ $PROFILE == 1 ]]; then
			penv+=("PHONEHOME_CPUPROFILE=$OUT/profiles/phonehome-$2-r$3.pprof"
				"PHONEHOME_MEMPROFILE=$OUT/profiles/phonehome-$2-r$3.heap")
		fi
		"${on_srv[@]}" env "${penv[@]}" "$bin/phonehome" serve -config "$work/phonehome.yaml" >"$work/querylog" 2>"$log" &
		;;
	unbound)
		port=$((UB_PORT + PORT_OFFSET))
		"${on_srv[@]}" unbound -d -c "$work/unbound.conf" >"$log" 2>&1 &
		;;
	dnsdist)
		# --supervised: in the foreground, without a console on stdin.
		port=$((DD_PORT + PORT_OFFSET))
		"${on_srv[@]}" dnsdist --supervised --disable-syslog -C "$work/dnsdist.conf" >"$log" 2>&1 &
		;;
	esac
	srv=$!
	local up=0
	for _ in $(seq 50); do
		perf "$work/probe.out" "$port" -d "$work/probe.txt" -n 1
		[[ $(stat_of "$work/probe.out" "Queries completed") == 1 ]] && up=1 && break
		kill -0 "$srv" 2>/dev/null || break
		sleep 0.1
	done
	if ((!up)); then
		echo "$1 did not start over $TRANSPORT; its log:" >&2
		cat "$log" "$work/probe.out" >&2
		exit 1
	fi

	# Its answers over TRANSPORT: the sinkhole's for a sinkholed name, with
	# no upstream query; the stub's for a name never asked before, with one.
	# Twice: phonehome looks up the name of a client whose query it logs
	# (client_names: ptr, its default) with a PTR query through the
	# upstream, once per address; the first check sets that off, the
	# second is the one counted.
	local i s0 s1 check=$work/runs/$1-$2-r$3.check
	for i in 1 2; do
		s0=$(stub_count_settled)
		if ! loadtls check -sinkholed "$sink_name" -ordinary "check$i-$1-$2-r$3.example.com" >"$check" 2>&1; then
			echo "$1 answered wrongly over $TRANSPORT:" >&2
			cat "$check" >&2
			exit 1
		fi
	done
	s1=$(stub_count_settled)
	if ((s1 - s0 != 1)); then
		echo "$1: its answer check over $TRANSPORT made $((s1 - s0)) upstream queries, want 1 (the new name's; the sinkholed name's none):" >&2
		cat "$check" >&2
		exit 1
	fi
}

# stop_server: SIGTERM, then SIGKILL after 10 s.
stop_server() {
	kill -TERM "$srv" 2>/dev/null || true
	for _ in $(seq 100); do kill -0 "$srv" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$srv" 2>/dev/null || true
	wait "$srv" 2>/dev/null || true
}

# hold_conns TAG: HOLD_CONNS idle encrypted connections to the server, 10
# from each of HOLD_CONNS / 10 addresses from 127.0.1.1 on; sets rss_conns (KB, read 1 s
# after the last one opened), opened and held (those still open after
# HOLD_SECONDS). The connections close when loadtls exits.
hold_conns() {
	local out=$work/runs/$1.hold h
	rss_conns=0 opened=0 held=0
	loadtls hold -conns "$HOLD_CONNS" -from 127.0.1.1 -sources $(((HOLD_CONNS + 9) / 10)) \
		-hold "${HOLD_SECONDS}s" -name host1.example.com -deadline "$((HOLD_SECONDS + 50))s" >"$out" 2>&1 &
	h=$!
	for _ in $(seq 500); do
		grep -q '^opened' "$out" && break
		kill -0 "$h" 2>/dev/null || break
		sleep 0.1
	done
	if grep -q '^opened' "$out"; then
		sleep 1
		rss_conns=$(rss_kb "$srv")
	fi
	wait "$h" || true
	opened=$(awk '/^opened/ { print $2 }' "$out")
	held=$(awk '/^alive/ { print $2 }' "$out")
	opened=${opened:-0} held=${held:-0}
}

# run_case SERVER WORKLOAD ROUND: one throughput and one latency run against
# a fresh server, then its memory; appends a line to results.tsv.
run_case() {
	local name=$1 wl=$2 r=$3 tag=$1-$2-r$3
	start_server "$name" "$wl" "$r"

	# Warm-up. hot: the 200 names once, so the run that follows is all cache
	# hits; the stub must see only the 160 ordinary names (sinkholed ones
	# never go upstream). cold: 100 other names, to open upstream sockets.
	local s0 s1 warm_up
	s0=$(stub_count)
	if [[ $wl == hot ]]; then
		perf "$work/runs/$tag.warm" "$port" -d "$work/hot.txt" -n 1 -c "$CLIENTS"
	else
		perf "$work/runs/$tag.warm" "$port" -d "$work/warm.txt" -n 1 -c "$CLIENTS"
	fi
	s1=$(stub_count)
	warm_up=$((s1 - s0))

	# Throughput: as fast as the server answers.
	# With PROFILE=1, phonehome profiles this run alone (SIGUSR2 to SIGUSR2).
	local file=$work/$wl.txt c0 c1 b0 b1 o0 o1 d0 d1 profiled=0
	[[ $PROFILE == 1 && $name == phonehome ]] && profiled=1
	((profiled)) && kill -USR2 "$srv"
	c0=$(ticks "$srv") b0=$(cpu_busy "$LOAD_CPU") o0=$(cpu_busy "$SERVER_CPU") d0=$(udp_drops) s0=$(stub_count)
	perf "$work/runs/$tag.max" "$port" -d "$file" -l "$DURATION" -q "$OUTSTANDING" -c "$CLIENTS"
	c1=$(ticks "$srv") b1=$(cpu_busy "$LOAD_CPU") o1=$(cpu_busy "$SERVER_CPU") d1=$(udp_drops) s1=$(stub_count)
	((profiled)) && kill -USR2 "$srv"
	# Queries per second over the DURATION s of sending: dnsperf's own figure
	# divides by a run time that also counts the wait (up to -t 2 s) for
	# queries that never come back, so one lost query can cut it by a sixth.
	local answered qps lost
	answered=$(stat_of "$work/runs/$tag.max" "Queries completed")
	lost=$(stat_of "$work/runs/$tag.max" "Queries lost")
	qps=$(awk -v n="$answered" -v d="$DURATION" 'BEGIN { printf "%.1f", n / d }')

	# Latency at a fixed rate; dnsperf -v prints "> RCODE name type seconds"
	# per answered query ("> T ..." for a timeout).
	local lfile=$work/hot.txt
	[[ $wl == cold ]] && lfile=$work/coldlat.txt
	local l0 l1
	l0=$(ticks "$srv")
	perf "$work/runs/$tag.lat" "$port" -d "$lfile" -l "$LAT_DURATION" -Q "$LAT_QPS" -c "$CLIENTS" -v
	l1=$(ticks "$srv")
	local p50 p99 latlost latn
	latn=$(stat_of "$work/runs/$tag.lat" "Queries completed")
	latlost=$(grep -c '^> T ' "$work/runs/$tag.lat" || true)
	read -r p50 p99 < <(awk '/^> / && $2 != "T" { print $NF * 1e3 }' "$work/runs/$tag.lat" | sort -g |
		awk '{ lat[++n] = $1 }
		END {
			if (n == 0) { print "nan nan"; exit }
			i50 = int(n * 0.50 + 0.5); i99 = int(n * 0.99 + 0.5)
			if (i50 < 1) i50 = 1
			if (i99 < 1) i99 = 1
			printf "%.3f %.3f\n", lat[i50], lat[i99]
		}')
	# Answers other than NOERROR in both runs (the workloads ask for
	# names that all exist, or are sinkholed with NOERROR).
	local rcode_other
	rcode_other=$((answered - $(noerror_of "$work/runs/$tag.max") + latn - $(noerror_of "$work/runs/$tag.lat")))

	# Memory: after the runs, then with HOLD_CONNS idle connections open.
	local rss rss_conns=0 opened=0 held=0 qlog=0
	rss=$(rss_kb "$srv")
	((HOLD_CONNS > 0)) && hold_conns "$tag"
	stop_server
	# phonehome's query log: lines written, then thrown away (it can be large).
	if [[ $name == phonehome ]]; then
		qlog=$(wc -l <"$work/querylog")
		rm -f "$work/querylog"
	fi

	# The server's CPU per answered query, how busy it kept its core, how
	# much of its core went to anything else, and how busy the load core was,
	# all during the throughput run.
	awk -v OFS='\t' -v wl="$wl" -v name="$name" -v r="$r" -v qps="$qps" -v answered="$answered" -v lost="$lost" \
		-v c="$((c1 - c0))" -v tck="$tck" -v dur="$DURATION" -v b0="$b0" -v b1="$b1" -v o0="$o0" -v o1="$o1" -v drops="$((d1 - d0))" -v lc="$((l1 - l0))" \
		-v latn="$latn" -v up="$((s1 - s0))" -v warm="$warm_up" -v p50="$p50" -v p99="$p99" -v latlost="$latlost" -v rss="$rss" -v qlog="$qlog" \
		-v rssc="$rss_conns" -v opened="$opened" -v held="$held" -v rcother="$rcode_other" '
		BEGIN {
			split(b0, x, " "); split(b1, y, " "); split(o0, u, " "); split(o1, v, " ")
			cpuus = answered > 0 ? c * 1e6 / tck / answered : 0
			latus = latn > 0 ? lc * 1e6 / tck / latn : 0
			busy = 100 * c / tck / dur
			load = (y[2] - x[2]) > 0 ? 100 * (y[1] - x[1]) / (y[2] - x[2]) : 0
			other = (v[2] - u[2]) > 0 ? 100 * (v[1] - u[1] - c) / (v[2] - u[2]) : 0
			if (other < 0) other = 0
			print wl, name, r, qps, cpuus, latus, p50, p99, rss / 1024, busy, load, (answered > 0 ? up / answered : 0), warm, other, qlog,
				rssc / 1024, opened, held, rcother, drops, lost, latlost
		}' >>"$work/results.tsv"
	local mem=""
	((HOLD_CONNS > 0)) && mem=$(awk -v a="$rss" -v b="$rss_conns" -v h="$held" -v n="$HOLD_CONNS" \
		'BEGIN { printf "  RSS %.1f MB, %.1f MB with %d of %d connections held", a / 1024, b / 1024, h, n }')
	printf '  round %s  %-5s %-9s %9.0f q/s  p50 %s ms  p99 %s ms%s\n' "$r" "$wl" "$name" "$qps" "$p50" "$p99" "$mem" >&2
}

# Steps 4 to 6: the rounds, interleaved.
printf 'workload\tserver\tround\tqps\tcpu_us\tcpu_us_fixed\tp50_ms\tp99_ms\trss_mb\tsrv_busy\tload_busy\tup_per_q\twarm_up\tsrv_core_other\tquerylog_lines\trss_conns_mb\tconns_opened\tconns_held\trcode_other\tudp_drops\tlost\tlat_lost\n' >"$work/results.tsv"
for ((r = 1; r <= ROUNDS; r++)); do
	for wl in hot cold; do
		for name in "${servers[@]}"; do
			run_case "$name" "$wl" "$r"
		done
	done
done
kill -TERM "$stub" 2>/dev/null || true
wait "$stub" 2>/dev/null || true

# Step 7: the table of medians, with the ratios phonehome/unbound and
# phonehome/dnsdist per workload.
awk -F'\t' -v rounds="$ROUNDS" -v dur="$DURATION" -v ldur="$LAT_DURATION" -v lq="$LAT_QPS" -v hold="$HOLD_CONNS" '
function median(key, col,    n, i, j, a, s) {
	n = split(vals[key, col], a, " ")
	# insertion sort: n is the number of rounds
	for (i = 2; i <= n; i++) { s = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > s + 0; j--) a[j + 1] = a[j]; a[j + 1] = s }
	return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function ratio(a, b) { return b > 0 ? a / b : 0 }
# per(wl, field, fmt): the field for each server, joined by "/".
function per(wl, field, fmt,    s, out) {
	for (s = 1; s <= ns; s++) out = out (s > 1 ? "/" : "") sprintf(fmt, M[wl, S[s], field])
	return out
}
NR == 1 { next }
{
	key = $1 SUBSEP $2
	for (i = 4; i <= NF; i++) vals[key, i] = vals[key, i] (vals[key, i] == "" ? "" : " ") $i
	rcother[$2] += $19
	if ($NF + $(NF - 1) + $(NF - 2) > 0) lossy = lossy sprintf("  %s %s round %s: %d queries lost and %d UDP datagrams dropped in the throughput run, %d queries lost in the latency run\n", $2, $1, $3, $(NF - 1), $(NF - 2), $NF)
}
END {
	ns = split(ENVIRON["BENCH_SERVERS"], S, " ")
	names = S[1]; for (s = 2; s <= ns; s++) names = names "/" S[s]
	others = ""; for (s = 2; s <= ns; s++) others = others (s > 2 ? " and " : "") S[s]
	transport = ENVIRON["TRANSPORT"]
	printf "\nphonehome vs %s: medians of %d round(s); throughput runs %d s, latency at %d q/s for %d s\n", others, rounds, dur, lq, ldur
	printf "clients over %s (%s -c %d, -q %d); upstream over %s\n", transport, (ENVIRON["LOAD_CLIENT"] == "loadtls" ? "bench/loadtls perf" : "dnsperf"),
		ENVIRON["CLIENTS"], ENVIRON["OUTSTANDING"], ENVIRON["UPSTREAM"]
	printf "server on CPU %s, load client and stub upstream on CPU %s; CPU us/q is the server utime+stime per answered query\n", ENVIRON["SERVER_CPU"], ENVIRON["LOAD_CPU"]
	if (hold > 0) printf "RSS +conns: resident memory with %d idle %s connections open, one query asked on each\n", hold, transport
	printf "\n"
	fmt = "%-8s %-17s %10s %9s %9s %8s %8s %7s%s %8s\n"
	printf fmt, "", "", "max", "CPU us/q", "CPU us/q", "", "", "", (hold > 0 ? sprintf(" %10s", "RSS MB") : ""), "server"
	printf fmt, "workload", "server", "queries/s", "at max", "at " lq, "p50 ms", "p99 ms", "RSS MB", (hold > 0 ? sprintf(" %10s", "+" hold " conns") : ""), "busy"
	split("hot cold", wls, " ")
	for (w = 1; w <= 2; w++) {
		wl = wls[w]
		for (s = 1; s <= ns; s++) {
			name = S[s]
			k = wl SUBSEP name
			split("qps cpu cpuf p50 p99 rss busy load up warm other qlog rssc opened held", f, " ")
			for (i = 1; i <= 15; i++) M[wl, name, f[i]] = median(k, i + 3)
			printf "%-8s %-17s %10.0f %9.2f %9.2f %8.3f %8.3f %7.1f%s %7.0f%%\n", wl, name, M[wl, name, "qps"], M[wl, name, "cpu"], M[wl, name, "cpuf"],
				M[wl, name, "p50"], M[wl, name, "p99"], M[wl, name, "rss"], (hold > 0 ? sprintf(" %10.1f", M[wl, name, "rssc"]) : ""), M[wl, name, "busy"]
		}
		for (s = 2; s <= ns; s++) {
			o = S[s]; p = "phonehome"
			printf "%-8s %-17s %9.2fx %8.2fx %8.2fx %7.2fx %7.2fx %6.2fx%s\n", wl, p "/" o,
				ratio(M[wl, p, "qps"], M[wl, o, "qps"]), ratio(M[wl, p, "cpu"], M[wl, o, "cpu"]), ratio(M[wl, p, "cpuf"], M[wl, o, "cpuf"]),
				ratio(M[wl, p, "p50"], M[wl, o, "p50"]), ratio(M[wl, p, "p99"], M[wl, o, "p99"]), ratio(M[wl, p, "rss"], M[wl, o, "rss"]),
				(hold > 0 ? sprintf(" %9.2fx", ratio(M[wl, p, "rssc"], M[wl, o, "rssc"])) : "")
		}
	}

	if (transport == "udp") {
		printf "\ntargets (issue 4):\n"
		if (M["hot", "unbound", "qps"] > 0) {
			t = ratio(M["hot", "phonehome", "qps"], M["hot", "unbound", "qps"])
			printf "  hot throughput  >= 0.6x unbound     %5.2fx   %s\n", t, (t >= 0.6 ? "met" : "MISSED")
			t = ratio(M["cold", "phonehome", "qps"], M["cold", "unbound", "qps"])
			printf "  cold throughput >= 1.5x unbound     %5.2fx   %s\n", t, (t >= 1.5 ? "met" : "MISSED")
			for (w = 1; w <= 2; w++) {
				wl = wls[w]; t = M[wl, "phonehome", "p99"] - M[wl, "unbound", "p99"]
				printf "  %-4s p99 <= unbound + 0.1 ms    %+8.3f ms %s\n", wl, t, (t <= 0.1 ? "met" : "MISSED")
			}
		}
		t = M["hot", "phonehome", "rss"] > M["cold", "phonehome", "rss"] ? M["hot", "phonehome", "rss"] : M["cold", "phonehome", "rss"]
		printf "  RSS < 60 MB                       %6.1f MB  %s\n", t, (t < 60 ? "met" : "MISSED")
	} else {
		printf "\ntargets (issue 15):\n"
		best = 0; bestname = "none"
		for (s = 2; s <= ns; s++) if (M["hot", S[s], "qps"] > best) { best = M["hot", S[s], "qps"]; bestname = S[s] }
		t = ratio(M["hot", "phonehome", "qps"], best)
		printf "  hot throughput over %s >= 1.0x the better of %s (%s)   %5.2fx   %s\n", transport, others, bestname, t, (best > 0 ? (t >= 1.0 ? "met" : "MISSED") : "not measured")
		if (hold > 0) {
			wl = M["hot", "phonehome", "rssc"] > M["cold", "phonehome", "rssc"] ? "hot" : "cold"
			t = M[wl, "phonehome", "rssc"]
			printf "  RSS < 60 MB with %d open connections   %6.1f MB  %s\n", hold, t,
				(M[wl, "phonehome", "held"] < hold ? sprintf("not measured: only %d were held", M[wl, "phonehome", "held"]) : (t < 60 ? "met" : "MISSED"))
		}
	}

	printf "\nchecks (%s runs):\n", names
	printf "  answers over %s at each start: a sinkholed name got A 0.0.0.0 and AAAA :: with no upstream query, a new name\n  NOERROR with the address of the stub: all %d servers\n", transport, ns
	printf "  answers other than NOERROR in the throughput and latency runs, all rounds: "
	for (s = 1; s <= ns; s++) printf "%s%d", (s > 1 ? "/" : ""), rcother[S[s]]
	printf "\n"
	printf "  load core (load client + stub) busy in throughput runs: hot %s%%, cold %s%%\n", per("hot", "load", "%.0f"), per("cold", "load", "%.0f")
	printf "  other work on the server core in throughput runs (approximate; 0 is clean): hot %s%%, cold %s%%\n", per("hot", "other", "%.0f"), per("cold", "other", "%.0f")
	printf "  upstream queries in the hot warm-up (want 160: sinkholed names never go upstream): %s\n", per("hot", "warm", "%d")
	printf "  phonehome query log lines per case (warm-up, throughput and latency runs): hot %d, cold %d\n",
		M["hot", "phonehome", "qlog"], M["cold", "phonehome", "qlog"]
	printf "  upstream queries per answered query: hot %s (want ~0), cold %s (want ~1)\n", per("hot", "up", "%.4f"), per("cold", "up", "%.3f")
	if (hold > 0) {
		printf "  connections held open to the end, of %d: hot %s, cold %s (opened: hot %s, cold %s)\n", hold,
			per("hot", "held", "%d"), per("cold", "held", "%d"), per("hot", "opened", "%d"), per("cold", "opened", "%d")
		if (ENVIRON["PH_TCP_CONNS"] > 0)
			printf "  phonehome: its bound of 256 TCP connections raised to %d for them (access.max_connections)\n", ENVIRON["PH_TCP_CONNS"]
	}
	for (w = 1; w <= 2; w++) for (s = 1; s <= ns; s++) {
		wl = wls[w]; name = S[s]
		if (M[wl, name, "load"] >= 95 && M[wl, name, "busy"] < 95)
			printf "  %s %s: the load core was saturated and the server was not (%.0f%% busy): its throughput is capped\n  by the load client, so compare CPU us/q\n", wl, name, M[wl, name, "busy"]
	}
	if (lossy != "") printf "  losses (a lost query timed out or was cut off by the end of its run; UDP drops are\n  RcvbufErrors + NoPorts in /proc/net/snmp):\n%s", lossy
}' "$work/results.tsv"
