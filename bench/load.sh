#!/usr/bin/env bash
# Load benchmark of issue 4 ("Speed"): phonehome against Debian's unbound, both
# forwarding to the same fast stub upstream (internal/stubdns), driven by
# dnsperf. Run from anywhere, as root:
#
#   bash bench/load.sh                      # 3 rounds of 10 s throughput and 10 s latency runs: ~8 min
#   DURATION=2 ROUNDS=1 bash bench/load.sh  # a quick look: ~30 s
#   PROFILE=1 bash bench/load.sh            # also CPU profiles of phonehome
#   REV=HEAD~3 bash bench/load.sh           # phonehome as of a commit
#   BARE=1 bash bench/load.sh               # phonehome without metrics, query log and activity
#   UPSTREAM=tls bash bench/load.sh         # both servers forward over DNS over TLS (or tcp: over TCP)
#   HISTORY=off bash bench/load.sh          # phonehome without its history database (on by default)
#
# It needs root, 2 cores and Go; Debian's dnsperf, unbound, util-linux
# (taskset, unshare) and iproute2 (ip) it installs with apt-get when they
# are missing. Variables
# of the environment reach phonehome too, so GOGC=400 bash bench/load.sh tries
# a GC setting.
#
# Everything runs inside a network namespace of its own with only loopback
# (unshare -n), so no packet can leave the machine whatever a config says, and
# inside a PID namespace, so every process it started dies with it. The whole
# run is bounded by `timeout`.
#
# Each server in turn is pinned to CPU 0 (SERVER_CPU); dnsperf and the stub
# share CPU 1 (LOAD_CPU). All of them run at nice -19, so that other work on
# the machine (a build, a test run) takes as little of those cores as it can;
# the "checks" below the table say how much it still took. For each round,
# workload and server, a fresh server process gets:
#   1. a warm-up pass (hot: the 200 names once, so the run is all cache hits);
#   2. a throughput run: dnsperf as fast as the server answers, DURATION s;
#      CPU time per answered query from /proc/PID/stat (utime+stime);
#   3. a latency run at a fixed LAT_QPS (2,000 q/s) for LAT_DURATION s with
#      `dnsperf -v`, whose per-query lines carry each latency, to take p50/p99
#      from (dnsperf 2.10 prints only the mean and standard deviation; it has
#      no histogram option); CPU time per query at that rate too;
#   4. VmRSS from /proc/PID/status, then SIGTERM.
# Rounds interleave: phonehome hot, unbound hot, phonehome cold, unbound cold.
# The table gives the median over rounds of each figure.
#
# UPSTREAM says how both servers reach the stub: udp (the default: plain DNS,
# TCP only after a truncated answer), tcp (tcp:// for phonehome,
# forward-tcp-upstream for unbound) or tls (DNS over TLS: tls:// and
# forward-tls-upstream). For tls the stub serves DNS over TLS on port 5303
# with a self-signed certificate it makes at start and writes to
# $work/stub-ca.pem; unbound trusts it through tls-cert-bundle, phonehome
# through SSL_CERT_FILE, which Go's crypto/x509 reads instead of the system's
# CA bundle (phonehome has no option for an upstream's CA yet; issue 15 adds
# tls_ca). SSL_CERT_FILE works with any REV, so older commits can be measured.
set -euo pipefail

# Tunables (environment).
DURATION=${DURATION:-10}         # seconds of each throughput run
LAT_DURATION=${LAT_DURATION:-$((DURATION < 10 ? DURATION : 10))} # seconds of each fixed-rate latency run
LAT_QPS=${LAT_QPS:-2000}         # rate of the latency runs
ROUNDS=${ROUNDS:-3}              # rounds; medians are reported
OUTSTANDING=${OUTSTANDING:-200}  # dnsperf -q: queries in flight in throughput runs
SERVER_CPU=${SERVER_CPU:-0}      # core of the server under test
LOAD_CPU=${LOAD_CPU:-1}          # core of dnsperf and the stub upstream
NICE=${NICE:--19}                # nice value of servers, stub and dnsperf: other work on the machine yields to them
PROFILE=${PROFILE:-0}            # 1: run phonehome's request path under a CPU profiler
REV=${REV:-}                     # build phonehome from this git revision, not the work tree
BARE=${BARE:-0}                  # 1: phonehome without per-query metrics, query log and web page activity
OUT=${OUT:-}                     # keep raw outputs (and profiles) here
UPSTREAM=${UPSTREAM:-udp}        # how the servers forward to the stub: udp, tcp or tls
HISTORY=${HISTORY:-on}           # off: "history: off" (only for revisions that have a history); on: the default, in the work directory

STUB_PORT=5300 PH_PORT=5301 UB_PORT=5302 STUB_TLS_PORT=5303 # only ever bound on 127.0.0.1 in the namespace
case $UPSTREAM in
udp) PH_UPSTREAM=127.0.0.1:$STUB_PORT ;;
tcp) PH_UPSTREAM=tcp://127.0.0.1:$STUB_PORT ;;
tls) PH_UPSTREAM=tls://127.0.0.1:$STUB_TLS_PORT#stubdns.test ;;
*)
	echo "bench/load.sh: UPSTREAM=$UPSTREAM: want udp, tcp or tls" >&2
	exit 1
	;;
esac

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
	if ! have dnsperf || ! have unbound || ! have unbound-checkconf || ! have taskset || ! have unshare || ! have ip; then
		echo "installing dnsperf, unbound, util-linux and iproute2 with apt-get..." >&2
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dnsperf unbound util-linux iproute2 >/dev/null
	fi
	missing=()
	have dnsperf || missing+=("dnsperf (Debian package dnsperf)")
	have unbound || missing+=("unbound (Debian package unbound)")
	have unbound-checkconf || missing+=("unbound-checkconf (Debian package unbound)")
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

	work=$(mktemp -d /tmp/phonehome-bench.XXXXXX)
	trap 'rm -rf "$work"' EXIT
	mkdir -p "$work/bin" "$work/logs" "$work/runs"
	if [[ -n $OUT || $PROFILE == 1 ]]; then
		OUT=${OUT:-$here/out/$(date +%Y%m%d-%H%M%S)}
		mkdir -p "$OUT"
		OUT=$(cd "$OUT" && pwd)
	fi

	# Step 2: build phonehome and the stub upstream, here, where the module
	# cache is reachable. With PROFILE=1 phonehome is built with one more
	# file in its main package, added by `go build -overlay` (the source tree
	# is not touched), that imports bench/profile: SIGUSR2 then starts and
	# stops a CPU profile.
	echo "building phonehome${REV:+ at $REV} and stubdns..." >&2
	(cd "$repo" && go build -o "$work/bin/stubdns" ./internal/stubdns)
	src=$repo
	if [[ -n $REV ]]; then
		src=$work/src
		mkdir -p "$src"
		git -C "$repo" archive "$REV" | tar -x -C "$src"
	fi
	# With BARE=1, serve.go is replaced (in the overlay too) by a copy that
	# gives the resolver no metrics registry and no observers (query log,
	# activity): the "before" of what counting costs (issue 5).
	overlay=()
	if [[ $PROFILE == 1 ]]; then
		printf 'package main\n\nimport _ "github.com/phonehome/phonehome/bench/profile"\n' >"$work/benchprofile.go"
		overlay+=("$src/cmd/phonehome/zz_benchprofile.go" "$work/benchprofile.go"
			"$src/bench/profile/profile.go" "$here/profile/profile.go")
	fi
	if [[ $BARE == 1 ]]; then
		sed 's|Registry: reg, Version: version, Observers: observers|Version: version /* bench/load.sh BARE=1 */|' \
			"$src/cmd/phonehome/serve.go" >"$work/serve.go"
		grep -q 'BARE=1' "$work/serve.go" || { echo "bench/load.sh: BARE=1: serve.go has changed; update the sed line" >&2; exit 1; }
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
		(cd "$src" && go build -overlay "$work/overlay.json" -o "$work/bin/phonehome" ./cmd/phonehome)
	else
		(cd "$src" && go build -o "$work/bin/phonehome" ./cmd/phonehome)
	fi

	# The phonehome config: one loopback listener, the stub as its only
	# upstream (over UPSTREAM), no rate limit, no HTTP server, the default
	# policy (telemetry sinkholed) and the default cache.
	cat >"$work/phonehome.yaml" <<-EOF
		listen: ["127.0.0.1:$PH_PORT"]
		upstreams: ["$PH_UPSTREAM"]
		http: ""
		access:
		  rate_limit: 0
	EOF
	if [[ $HISTORY == off ]]; then echo 'history: off' >>"$work/phonehome.yaml"; fi

	# The names phonehome sinkholes: the catalog's telemetry patterns that are
	# single host names, kept only when `phonehome check` with this config
	# says sinkhole (protected ones are never sinkholed). Wildcard patterns
	# are left out: the workload asks for exact names only.
	sinkholed_names "$work/bin/phonehome" "$work/phonehome.yaml" "$work/sinkholed"

	# The unbound config: the same upstream, one thread, default cache sizes,
	# iterator only (no DNSSEC validation, as phonehome does none), and the
	# same names answered 0.0.0.0 / :: with local-zone always_null.
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
	# time: four cases of a throughput and a latency run per round, plus
	# start-up and warm-up.
	limit=$((ROUNDS * 4 * (DURATION + LAT_DURATION + 20) + 60))
	echo "running $ROUNDS round(s) of ${DURATION}s throughput + ${LAT_DURATION}s latency runs (at most ${limit}s)..." >&2
	rc=0
	in_namespace "$limit" BENCH_INSIDE=1 "BENCH_WORK=$work" "DURATION=$DURATION" "LAT_DURATION=$LAT_DURATION" "LAT_QPS=$LAT_QPS" \
		"ROUNDS=$ROUNDS" "OUTSTANDING=$OUTSTANDING" "OUT=$OUT" "NICE=$NICE" "SERVER_CPU=$SERVER_CPU" "LOAD_CPU=$LOAD_CPU" "PROFILE=$PROFILE" "UPSTREAM=$UPSTREAM" "HISTORY=$HISTORY" || rc=$?

	if [[ -n $OUT ]]; then
		cp -r "$work/runs" "$work/logs" "$work/results.tsv" "$work/hot.txt" "$work/unbound.conf" \
			"$work/phonehome.yaml" "$OUT/" 2>/dev/null || true
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
# perf OUTFILE PORT ARGS...: dnsperf on the load core.
perf() {
	local out=$1 port=$2
	shift 2
	"${on_load[@]}" dnsperf -s 127.0.0.1 -p "$port" -t 2 "$@" >"$out" 2>&1
}
# stat_of FILE KEY: a number from dnsperf's statistics.
stat_of() { awk -v k="$2" 'index($0, k) { sub(/.*: */, ""); print $1 + 0; exit }' "$1"; }

# The stub upstream, on the load core for the whole run. On SIGUSR1 it logs
# how many queries it has answered, to count what each server forwards. With
# UPSTREAM=tls it also serves DNS over TLS, with the certificate it writes to
# stub-ca.pem, which both servers trust.
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

# start_server NAME WORKLOAD ROUND: start a fresh server on the server core
# and wait until it answers; sets srv (its PID) and port.
start_server() {
	local log=$work/logs/$1-$2-r$3.log
	case $1 in
	phonehome)
		# Its query log (stdout by default) goes to a file of its own.
		port=$PH_PORT
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
		port=$UB_PORT
		"${on_srv[@]}" unbound -d -c "$work/unbound.conf" >"$log" 2>&1 &
		;;
	esac
	srv=$!
	for _ in $(seq 50); do
		perf "$work/probe.out" "$port" -d "$work/probe.txt" -n 1
		[[ $(stat_of "$work/probe.out" "Queries completed") == 1 ]] && return 0
		kill -0 "$srv" 2>/dev/null || break
		sleep 0.1
	done
	echo "$1 did not start; its log:" >&2
	cat "$log" >&2
	exit 1
}

# stop_server: SIGTERM, then SIGKILL after 10 s.
stop_server() {
	kill -TERM "$srv" 2>/dev/null || true
	for _ in $(seq 100); do kill -0 "$srv" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$srv" 2>/dev/null || true
	wait "$srv" 2>/dev/null || true
}

# run_case SERVER WORKLOAD ROUND: one throughput and one latency run against
# a fresh server; appends a line to results.tsv.
run_case() {
	local name=$1 wl=$2 r=$3 tag=$1-$2-r$3
	start_server "$name" "$wl" "$r"

	# Warm-up. hot: the 200 names once, so the run that follows is all cache
	# hits; the stub must see only the 160 ordinary names (sinkholed ones
	# never go upstream). cold: 100 other names, to open upstream sockets.
	local s0 s1 warm_up
	s0=$(stub_count)
	if [[ $wl == hot ]]; then
		perf "$work/runs/$tag.warm" "$port" -d "$work/hot.txt" -n 1
	else
		perf "$work/runs/$tag.warm" "$port" -d "$work/warm.txt" -n 1
	fi
	s1=$(stub_count)
	warm_up=$((s1 - s0))

	# Throughput: as fast as the server answers.
	# With PROFILE=1, phonehome profiles this run alone (SIGUSR2 to SIGUSR2).
	local file=$work/$wl.txt c0 c1 b0 b1 o0 o1 d0 d1 profiled=0
	[[ $PROFILE == 1 && $name == phonehome ]] && profiled=1
	((profiled)) && kill -USR2 "$srv"
	c0=$(ticks "$srv") b0=$(cpu_busy "$LOAD_CPU") o0=$(cpu_busy "$SERVER_CPU") d0=$(udp_drops) s0=$(stub_count)
	perf "$work/runs/$tag.max" "$port" -d "$file" -l "$DURATION" -q "$OUTSTANDING"
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
	perf "$work/runs/$tag.lat" "$port" -d "$lfile" -l "$LAT_DURATION" -Q "$LAT_QPS" -v
	l1=$(ticks "$srv")
	local p50 p99 latlost
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

	local rss qlog=0
	rss=$(rss_kb "$srv")
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
		-v latn="$(stat_of "$work/runs/$tag.lat" "Queries completed")" \
		-v up="$((s1 - s0))" -v warm="$warm_up" -v p50="$p50" -v p99="$p99" -v latlost="$latlost" -v rss="$rss" -v qlog="$qlog" '
		BEGIN {
			split(b0, x, " "); split(b1, y, " "); split(o0, u, " "); split(o1, v, " ")
			cpuus = answered > 0 ? c * 1e6 / tck / answered : 0
			latus = latn > 0 ? lc * 1e6 / tck / latn : 0
			busy = 100 * c / tck / dur
			load = (y[2] - x[2]) > 0 ? 100 * (y[1] - x[1]) / (y[2] - x[2]) : 0
			other = (v[2] - u[2]) > 0 ? 100 * (v[1] - u[1] - c) / (v[2] - u[2]) : 0
			if (other < 0) other = 0
			print wl, name, r, qps, cpuus, latus, p50, p99, rss / 1024, busy, load, (answered > 0 ? up / answered : 0), warm, other, qlog, drops, lost, latlost
		}' >>"$work/results.tsv"
	printf '  round %s  %-5s %-9s %9.0f q/s  p50 %s ms  p99 %s ms\n' "$r" "$wl" "$name" "$qps" "$p50" "$p99" >&2
}

# Steps 4 to 6: the rounds, interleaved.
printf 'workload\tserver\tround\tqps\tcpu_us\tcpu_us_fixed\tp50_ms\tp99_ms\trss_mb\tsrv_busy\tload_busy\tup_per_q\twarm_up\tsrv_core_other\tquerylog_lines\tudp_drops\tlost\tlat_lost\n' >"$work/results.tsv"
for ((r = 1; r <= ROUNDS; r++)); do
	for wl in hot cold; do
		for name in phonehome unbound; do
			run_case "$name" "$wl" "$r"
		done
	done
done
kill -TERM "$stub" 2>/dev/null || true
wait "$stub" 2>/dev/null || true

# Step 7: the table of medians, with the phonehome/unbound ratio per workload.
awk -F'\t' -v rounds="$ROUNDS" -v dur="$DURATION" -v ldur="$LAT_DURATION" -v lq="$LAT_QPS" '
function median(key, col,    n, i, j, a, s) {
	n = split(vals[key, col], a, " ")
	# insertion sort: n is the number of rounds
	for (i = 2; i <= n; i++) { s = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > s + 0; j--) a[j + 1] = a[j]; a[j + 1] = s }
	return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
NR == 1 { next }
{
	key = $1 SUBSEP $2
	for (i = 4; i <= NF; i++) vals[key, i] = vals[key, i] (vals[key, i] == "" ? "" : " ") $i
	if ($NF + $(NF - 1) + $(NF - 2) > 0) lossy = lossy sprintf("  %s %s round %s: %d queries lost and %d UDP datagrams dropped in the throughput run, %d queries lost in the latency run\n", $2, $1, $3, $(NF - 1), $(NF - 2), $NF)
}
END {
	printf "\nphonehome vs unbound: medians of %d round(s); throughput runs %d s, latency at %d q/s for %d s; upstream over %s\n", rounds, dur, lq, ldur, ENVIRON["UPSTREAM"]
	printf "server on CPU %s, dnsperf and stub upstream on CPU %s; CPU us/q is the server utime+stime per answered query\n\n", ENVIRON["SERVER_CPU"], ENVIRON["LOAD_CPU"]
	fmt = "%-8s %-17s %10s %9s %9s %8s %8s %7s %8s\n"
	printf fmt, "", "", "max", "CPU us/q", "CPU us/q", "", "", "", "server"
	printf fmt, "workload", "server", "queries/s", "at max", "at " lq, "p50 ms", "p99 ms", "RSS MB", "busy"
	split("hot cold", wls, " ")
	for (w = 1; w <= 2; w++) {
		wl = wls[w]
		for (s = 1; s <= 2; s++) {
			name = s == 1 ? "phonehome" : "unbound"
			k = wl SUBSEP name
			m[name, "qps"] = median(k, 4); m[name, "cpu"] = median(k, 5); m[name, "cpuf"] = median(k, 6)
			m[name, "p50"] = median(k, 7); m[name, "p99"] = median(k, 8)
			m[name, "rss"] = median(k, 9); m[name, "busy"] = median(k, 10)
			m[name, "load"] = median(k, 11); m[name, "up"] = median(k, 12); m[name, "warm"] = median(k, 13)
			m[name, "other"] = median(k, 14); m[name, "qlog"] = median(k, 15)
			printf "%-8s %-17s %10.0f %9.2f %9.2f %8.3f %8.3f %7.1f %7.0f%%\n", wl, name, m[name, "qps"], m[name, "cpu"], m[name, "cpuf"], m[name, "p50"], m[name, "p99"], m[name, "rss"], m[name, "busy"]
		}
		r = "phonehome/unbound"
		printf "%-8s %-17s %9.2fx %8.2fx %8.2fx %7.2fx %7.2fx %6.2fx\n", wl, r,
			m["phonehome", "qps"] / m["unbound", "qps"], m["phonehome", "cpu"] / m["unbound", "cpu"],
			m["phonehome", "cpuf"] / m["unbound", "cpuf"],
			m["phonehome", "p50"] / m["unbound", "p50"], m["phonehome", "p99"] / m["unbound", "p99"],
			m["phonehome", "rss"] / m["unbound", "rss"]
		for (s = 1; s <= 2; s++) { name = s == 1 ? "phonehome" : "unbound"; M[wl, name, "qps"] = m[name, "qps"]; M[wl, name, "p99"] = m[name, "p99"]; M[wl, name, "rss"] = m[name, "rss"]; M[wl, name, "load"] = m[name, "load"]; M[wl, name, "up"] = m[name, "up"]; M[wl, name, "warm"] = m[name, "warm"]; M[wl, name, "other"] = m[name, "other"]; M[wl, name, "busy"] = m[name, "busy"]; M[wl, name, "qlog"] = m[name, "qlog"] }
	}
	printf "\ntargets (issue 4):\n"
	t = M["hot", "phonehome", "qps"] / M["hot", "unbound", "qps"]
	printf "  hot throughput  >= 0.6x unbound     %5.2fx   %s\n", t, (t >= 0.6 ? "met" : "MISSED")
	t = M["cold", "phonehome", "qps"] / M["cold", "unbound", "qps"]
	printf "  cold throughput >= 1.5x unbound     %5.2fx   %s\n", t, (t >= 1.5 ? "met" : "MISSED")
	for (w = 1; w <= 2; w++) {
		wl = wls[w]; t = M[wl, "phonehome", "p99"] - M[wl, "unbound", "p99"]
		printf "  %-4s p99 <= unbound + 0.1 ms    %+8.3f ms %s\n", wl, t, (t <= 0.1 ? "met" : "MISSED")
	}
	t = M["hot", "phonehome", "rss"] > M["cold", "phonehome", "rss"] ? M["hot", "phonehome", "rss"] : M["cold", "phonehome", "rss"]
	printf "  RSS < 60 MB                       %6.1f MB  %s\n", t, (t < 60 ? "met" : "MISSED")

	printf "\nchecks:\n"
	printf "  load core (dnsperf + stub) busy in throughput runs: hot %.0f%%/%.0f%%, cold %.0f%%/%.0f%% (phonehome/unbound runs)\n",
		M["hot", "phonehome", "load"], M["hot", "unbound", "load"], M["cold", "phonehome", "load"], M["cold", "unbound", "load"]
	printf "  other work on the server core in throughput runs (approximate): hot %.0f%%/%.0f%%, cold %.0f%%/%.0f%% (phonehome/unbound runs; 0 is clean)\n",
		M["hot", "phonehome", "other"], M["hot", "unbound", "other"], M["cold", "phonehome", "other"], M["cold", "unbound", "other"]
	printf "  upstream queries in the hot warm-up (want 160: sinkholed names never go upstream): phonehome %d, unbound %d\n",
		M["hot", "phonehome", "warm"], M["hot", "unbound", "warm"]
	printf "  phonehome query log lines per case (warm-up, throughput and latency runs): hot %d, cold %d\n",
		M["hot", "phonehome", "qlog"], M["cold", "phonehome", "qlog"]
	printf "  upstream queries per answered query: hot %.4f/%.4f (want ~0), cold %.3f/%.3f (want ~1)\n",
		M["hot", "phonehome", "up"], M["hot", "unbound", "up"], M["cold", "phonehome", "up"], M["cold", "unbound", "up"]
	for (w = 1; w <= 2; w++) for (s = 1; s <= 2; s++) {
		wl = wls[w]; name = s == 1 ? "phonehome" : "unbound"
		if (M[wl, name, "load"] >= 95 && M[wl, name, "busy"] < 95)
			printf "  %s %s: the load core was saturated and the server was not (%.0f%% busy): its throughput is capped\n  by dnsperf, so compare CPU us/q\n", wl, name, M[wl, name, "busy"]
	}
	if (lossy != "") printf "  losses (a lost query timed out or was cut off by the end of its run; UDP drops are\n  RcvbufErrors + NoPorts in /proc/net/snmp):\n%s", lossy
}' "$work/results.tsv"
