#!/usr/bin/env bash
# End-to-end bench: iperf3 through wirespeed (AF_XDP and UDP backends),
# wireguard-go (Debian's and upstream's) and boringtun tunnels between two
# network namespaces, each next to the bare link measured in the same run.
#
#   [MODE=unshaped|shaped|both] [SHAPED=1] [RATES="1 2 2.5"] [REPEAT=N]
#   [PIN=0|1] [OUT_DIR=dir] [WIRESPEED=bin] [WIREGUARD_GO_UPSTREAM=bin]
#       bench/scripts/tunnel-bench.sh [SECONDS] [IMPL...]
#
# SECONDS per iperf3 run (default 10). IMPL: wirespeed-xdp, wirespeed-udp,
# wirespeed (auto backend), wireguard-go, wireguard-go-upstream, boringtun;
# default all but `wirespeed`. One that is not installed is skipped with a
# note (wireguard-go-upstream is at $WIREGUARD_GO_UPSTREAM, default
# /opt/peers/bin/wireguard-go-upstream; CI never has it).
#
# MODE=unshaped (the default) runs two namespaces joined by a bare veth
# pair and prints, per implementation, TCP with 1 and with 4 streams
# (iperf3 -P 4) and a UDP flood in Gbit/s, each as a ratio to bare veth, and
# the CPU-seconds per GB the TCP run cost: the daemons of both ends with
# their children (wirespeed's data plane), from /proc/PID/stat, and the
# whole host, from /proc/stat.
# MODE=shaped puts a router namespace between the two, limits both
# directions to each of RATES Gbit/s with tbf, and prints each tunnel's TCP
# goodput as a share of bare TCP on the same shaped link. The ceiling is
# what the headers leave: a 1420-byte inner packet carries 1368 bytes of
# TCP in a 1494-byte frame over IPv4 (1514 over IPv6), bare TCP 1448 in
# 1514, so 0.957 (0.945). MODE=both, or SHAPED=1, runs one after the other.
#
# Every figure is the median of REPEAT runs (default 3; on a small shared
# machine one UDP run swings by a factor of two) over the runs that worked;
# a cell where none did reads n/a and the bench goes on. Rows of wirespeed
# also show the ratio to wireguard-go-upstream, which is measured first.
# PIN=1 (the default with 2 CPUs or more) puts each end's daemon and its
# iperf3 on a CPU of their own; see tunnel-lib.sh.
#
# Besides the tables on stdout, OUT_DIR (default bench/results/) gets
# tunnel-bench-STAMP.txt (the tables), .csv (every cell, with the runs it is
# the median of) and, for the shaped mode, .svg (goodput against link rate
# per implementation, drawn with gnuplot).
set -euo pipefail
SECS=${1:-10}; shift || true
IMPLS=("$@")
[ ${#IMPLS[@]} -gt 0 ] || IMPLS=(wireguard-go-upstream wirespeed-xdp wirespeed-udp wireguard-go boringtun)
. "$(dirname "$0")/tunnel-lib.sh"
trap tl_cleanup EXIT
REPEAT=${REPEAT:-3}
MODE=${MODE:-$([ "${SHAPED:-0}" = 1 ] && echo both || echo unshaped)}
RATES=${RATES:-1 2 2.5}
OUT_DIR=${OUT_DIR:-$ROOT/bench/results}
case $MODE in unshaped | shaped | both) ;; *) echo "MODE is unshaped, shaped or both, not $MODE" >&2; exit 2 ;; esac

# Built every run unless WIRESPEED names a binary: an old build would
# measure old code.
[ -n "$WIRESPEED_GIVEN" ] || (cd "$ROOT" && cargo build --release -q -p wirespeed-control)

installed() {
    case $1 in
        wirespeed*) [ -x "$WIRESPEED" ] ;;
        wireguard-go) command -v wireguard-go >/dev/null ;;
        wireguard-go-upstream) [ -x "$WIREGUARD_GO_UPSTREAM" ] ;;
        boringtun) [ -x "$BORINGTUN" ] ;;
        *) true ;; # tl_start says what it does not know
    esac
}
# Upstream first: it is the second reference for the wirespeed rows, which
# are printed as they are measured.
list=()
for impl in "${IMPLS[@]}"; do
    if ! installed "$impl"; then
        echo "note: $impl is not installed here, skipped" >&2
    elif [ "$impl" = wireguard-go-upstream ]; then
        list=("$impl" ${list[@]+"${list[@]}"})
    else
        list+=("$impl")
    fi
done
IMPLS=(${list[@]+"${list[@]}"})

mkdir -p "$OUT_DIR"
BASE=$OUT_DIR/tunnel-bench-$(date +%Y%m%d-%H%M%S)
CSV=$BASE.csv; TXT=$BASE.txt
echo "mode,rate_gbit,impl,test,gbit_s,ratio_bare,ratio_upstream,daemon_cpu_s_per_gb,host_cpu_s_per_gb,runs_ok,runs_gbit_s" >"$CSV"
# shellcheck disable=SC2059  # say takes printf's arguments, format first
say() { printf "$@" | tee -a "$TXT"; }

# once ADDR [iperf3 args]: one iperf3 run; prints Gbit/s, then CPU-seconds
# per GB received of the daemons ("-" without any) and of the host, or
# n/a n/a n/a when nothing got through. The host is read inside the
# daemons' reads so their python is not counted.
once() {
    local d0 d1 h0 h1 g
    d0=$(tl_daemon_cpu); h0=$(tl_host_cpu)
    g=$(tl_iperf "$1" "$SECS" "${@:2}")
    h1=$(tl_host_cpu); d1=$(tl_daemon_cpu)
    awk -v g="$g" -v gb="$(cat "$WORK/iperf.bytes")e-9" -v d0="$d0" -v d1="$d1" -v h0="$h0" -v h1="$h1" \
        -v daemons=${#PIDS[@]} 'BEGIN {
            if (g <= 0 || gb <= 0) { print "n/a n/a n/a"; exit }
            printf "%s %s %.2f\n", g, daemons ? sprintf("%.2f", (d1 - d0) / gb) : "-", (h1 - h0) / gb
        }'
}

# cell ADDR [iperf3 args]: REPEAT runs; prints the median of each of once's
# figures over the runs that worked (n/a when none did), how many worked,
# and every run's Gbit/s.
cell() {
    local i
    for ((i = 0; i < REPEAT; i++)); do once "$@"; done | awk '
        function med(f,   i, j, t, a) {
            for (i = 1; i <= n; i++) {
                a[i] = v[f, i]
                for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
            }
            return a[int((n + 1) / 2)]
        }
        { runs = runs (NR > 1 ? ";" : "") $1 }
        $1 != "n/a" { n++; for (f = 1; f <= 3; f++) v[f, n] = $f }
        END { if (n) print med(1), med(2), med(3), n, runs; else print "n/a n/a n/a 0", runs }'
}

# ratio A B: A / B, or n/a when A failed, "-" when there is no B.
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (a == "n/a") print "n/a"; else if (b == "" || b == "n/a" || b == "-" || b + 0 == 0) print "-"; else printf "%.3f\n", a / b }'
}

# csv MODE RATE IMPL TEST CELL RATIO_BARE RATIO_UP
csv() {
    local c
    read -r -a c <<<"$5"
    echo "$1,$2,$3,$4,${c[0]},$6,$7,${c[1]},${c[2]},${c[3]},${c[4]:-}" >>"$CSV"
}

# upstream_of IMPL TEST: for a wirespeed row, TEST's Gbit/s through
# wireguard-go-upstream, when measured (UP[TEST]); nothing otherwise.
declare -A UP=()
upstream_of() {
    if [[ $1 == wirespeed* ]]; then echo "${UP[$2]:-}"; fi
}

unshaped() {
    local impl n=0 t c d h tcp tcp4 udp r_b=() r_u=()
    declare -A bare=()
    # Bare veth first: attaching XDP to a veth turns TSO off on its peer.
    tl_link
    bare[tcp]=$(cell "$UNDER_B")
    bare[tcp4]=$(cell "$UNDER_B" -P 4)
    bare[udp]=$(cell "$UNDER_B" "${UDP_ARGS[@]}")
    say '\n== unshaped veth: %s s per run, median of %s, PIN=%s\n' "$SECS" "$REPEAT" "$PIN"
    say '%-22s %20s   %20s   %20s   %s\n' "" "Gbit/s" "ratio to bare veth" "ratio to upstream" "CPU-s/GB (TCP)"
    say '%-22s %6s %6s %6s   %6s %6s %6s   %6s %6s %6s   %7s %6s\n' impl TCP TCPx4 UDP TCP TCPx4 UDP TCP TCPx4 UDP daemons host
    for t in tcp tcp4 udp; do csv unshaped 0 bare-veth "$t" "${bare[$t]}" 1.000 -; done
    read -r tcp _ h _ <<<"${bare[tcp]}"; read -r tcp4 _ <<<"${bare[tcp4]}"; read -r udp _ <<<"${bare[udp]}"
    say '%-22s %6s %6s %6s   %6s %6s %6s   %6s %6s %6s   %7s %6s\n' "bare veth" "$tcp" "$tcp4" "$udp" 1.000 1.000 1.000 - - - - "$h"
    for impl in ${IMPLS[@]+"${IMPLS[@]}"}; do
        n=$((n + 1))
        declare -A got=([tcp]="n/a n/a n/a 0" [tcp4]="n/a n/a n/a 0" [udp]="n/a n/a n/a 0")
        if tl_tunnel "$impl" "$impl" "$n"; then
            got[tcp]=$(cell "$TUN_B")
            got[tcp4]=$(cell "$TUN_B" -P 4)
            got[udp]=$(cell "$TUN_B" "${UDP_ARGS[@]}")
        else
            echo "note: $impl: no tunnel, its row is n/a" >&2
        fi
        tl_stop_tunnel
        r_b=(); r_u=()
        for t in tcp tcp4 udp; do
            read -r c _ <<<"${got[$t]}"
            r_b+=("$(ratio "$c" "${bare[$t]%% *}")")
            r_u+=("$(ratio "$c" "$(upstream_of "$impl" "$t")")")
            csv unshaped 0 "$impl" "$t" "${got[$t]}" "${r_b[-1]}" "${r_u[-1]}"
            [ "$impl" != wireguard-go-upstream ] || UP[$t]=$c
        done
        read -r tcp d h _ <<<"${got[tcp]}"; read -r tcp4 _ <<<"${got[tcp4]}"; read -r udp _ <<<"${got[udp]}"
        say '%-22s %6s %6s %6s   %6s %6s %6s   %6s %6s %6s   %7s %6s\n' "$impl" "$tcp" "$tcp4" "$udp" "${r_b[@]}" "${r_u[@]}" "$d" "$h"
    done
    tl_unlink
}

shaped() {
    local impl n=100 r g rb ru line dat=$BASE.dat max=0 col=() c
    declare -A bare=()
    tl_link_routed
    # Bare first, for the same reason as above.
    for r in $RATES; do
        tl_shape "$r" || { echo "tc could not shape the link to $r Gbit/s" >&2; return 1; }
        bare[$r]=$(cell "$UNDER_B")
        csv shaped "$r" bare-link tcp "${bare[$r]}" 1.000 -
        max=$(awk -v a="$max" -v b="$r" 'BEGIN { print (b > a ? b : a) }')
    done
    say '\n== shaped link (tbf on a router between the ends): TCP, %s s per run, median of %s, PIN=%s\n' "$SECS" "$REPEAT" "$PIN"
    say '%-22s' ""; for r in $RATES; do say '   %-22s' "$r Gbit/s link"; done; say '\n'
    say '%-22s' impl; for r in $RATES; do say '   %6s %7s %7s' Gbit/s "/bare" "/upstr"; done; say '\n'
    say '%-22s' "bare link"; printf '"bare link"\n' >"$dat"
    for r in $RATES; do
        read -r g _ <<<"${bare[$r]}"
        say '   %6s %7s %7s' "$g" 1.000 -
        echo "$r $g" >>"$dat"
    done
    say '\n%-22s' "  (share of the rate)"; for r in $RATES; do say '   %6s %7s %7s' "$(ratio "${bare[$r]%% *}" "$r")" "" ""; done; say '\n'
    for impl in ${IMPLS[@]+"${IMPLS[@]}"}; do
        n=$((n + 1))
        line=$(printf '%-22s' "$impl"); printf '\n\n"%s"\n' "$impl" >>"$dat"
        col=()
        if tl_tunnel "$impl" "$impl" "$n"; then
            for r in $RATES; do
                if tl_shape "$r"; then col+=("$(cell "$TUN_B")"); else col+=("n/a n/a n/a 0"); fi
            done
        else
            echo "note: $impl: no tunnel, its row is n/a" >&2
            for r in $RATES; do col+=("n/a n/a n/a 0"); done
        fi
        tl_stop_tunnel
        for r in $RATES; do
            c=${col[0]}; col=("${col[@]:1}")
            g=${c%% *}
            [ "$impl" != wireguard-go-upstream ] || UP[shaped$r]=$g
            rb=$(ratio "$g" "${bare[$r]%% *}"); ru=$(ratio "$g" "$(upstream_of "$impl" "shaped$r")")
            line+=$(printf '   %6s %7s %7s' "$g" "$rb" "$ru")
            csv shaped "$r" "$impl" tcp "$c" "$rb" "$ru"
            echo "$r $g" >>"$dat"
        done
        say '%s\n' "$line"
    done
    tl_unlink
    plot "$dat" "$max"
}

# plot DATA MAX_RATE: goodput against link rate, one line per
# implementation (DATA holds one block each, its title on the first line).
plot() {
    if ! command -v gnuplot >/dev/null; then
        echo "note: no gnuplot (deploy/setup.sh installs gnuplot-nox), no plot" >&2
        return 0
    fi
    local blocks
    blocks=$(grep -c '^"' "$1")
    gnuplot <<EOF || echo "note: gnuplot failed, no plot" >&2
set terminal svg size 800,500 dynamic background rgb 'white'
set output '$BASE.svg'
set title 'TCP goodput on a tbf-shaped link, median of $REPEAT runs of $SECS s, PIN=$PIN'
set xlabel 'link rate, Gbit/s'
set ylabel 'TCP goodput, Gbit/s'
set datafile missing 'n/a'
set key top left
set grid
set xrange [0:$2 * 1.05]
set yrange [0:$2 * 1.05]
plot x with lines dashtype 2 lc rgb 'gray' title 'link rate', \
     for [i=0:$((blocks - 1))] '$1' index i using 1:2 with linespoints title columnheader(1)
EOF
    [ -s "$BASE.svg" ] && echo "plot: $BASE.svg"
    rm -f "$1"
}

# UDP: unlimited rate, datagrams that fit the tunnel's 1420-byte MTU.
UDP_ARGS=(-u -b 0 -l 1380)
[ "$MODE" = shaped ] || unshaped
[ "$MODE" = unshaped ] || shaped
echo "results: $CSV $TXT"
