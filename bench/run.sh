#!/bin/sh
# bench/run.sh BUILD - the cmkcertfs performance table (`make bench`).
#
#  1. open + read + close of one .crt, .key and bundle through the mount,
#     against the same bytes on tmpfs, CMKBENCH_ITER rounds each in one
#     process (bench/fsbench.c);
#  2. `ls -l` of /certs holding CMKBENCH_CERTS certificates, first right after
#     mounting (nothing cached) and again (kernel caches warm).
# The store is filled through the store and seal API (bench/populate.c) with
# real certificates and keys (bench/gencerts.py).  Needs root and /dev/fuse.
set -eu

BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
N=${CMKBENCH_CERTS:-10000}
ITER=${CMKBENCH_ITER:-10000}
PYTHON=${PYTHON:-/usr/bin/python3}
CC=${CC:-cc}

W=$(mktemp -d /tmp/cmkbench.XXXXXX)
chmod 755 "$W"
MNT=$W/mnt
SHM=
FSPID=

cleanup() {
	if [ -n "$FSPID" ]; then
		fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -u -z "$MNT" 2>/dev/null || true
		wait "$FSPID" 2>/dev/null || true
	fi
	[ -n "$SHM" ] && rm -rf "$SHM"
	rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ns() { date +%s%N; }

is_mounted() { awk -v m="$1" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo; }

# ---- tools --------------------------------------------------------------------
MBED_LIBS=$(pkg-config --libs mbedtls mbedx509 mbedcrypto 2>/dev/null || echo -lmbedtls -lmbedx509 -lmbedcrypto)
$CC -O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -o "$W/fsbench" "$ROOT/bench/fsbench.c"
$CC -O2 -std=c11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -Wall -Wextra -Werror -I"$ROOT/include" \
	$(pkg-config --cflags libcurl inih jansson) -o "$W/populate" "$ROOT/bench/populate.c" \
	"$BUILD/libcmkcert.a" $(pkg-config --libs libcurl inih jansson) $MBED_LIBS -ldb -lpthread

# ---- a store with N active certificates ------------------------------------------
mkdir -m 700 "$W/etc"
head -c 32 /dev/urandom > "$W/etc/master.key"
chmod 600 "$W/etc/master.key"
# OpenBao is never contacted: the daemon only reads the store.
cat > "$W/etc/cmkcert.conf" <<EOF
[openbao]
address = https://127.0.0.1:1
ca_cert = $W/etc/unused-ca.pem
pki_mount = pki_client_certs
role = bench
[auth]
method = token
token_path = $W/etc/unused-token
[store]
path = $W/store
[keys]
provider = local
master_key = $W/etc/master.key
[audit]
path = $W/audit.log
[template:aws_kms]
common_name = tenant-{tenant_id}-aws.keystore.internal
key_type = ec
key_bits = 256
ttl = 4380h
EOF
chmod 600 "$W/etc/cmkcert.conf"

t0=$(now_ns)
"$PYTHON" "$ROOT/bench/gencerts.py" "$N" "$W/gen"
t1=$(now_ns)
stored=$("$W/populate" "$W/etc/cmkcert.conf" "$W/gen/pairs.pem" "$W/gen/ca-chain.pem" bench)
t2=$(now_ns)
rm -f "$W/gen/pairs.pem"
echo "store: $stored active certificates (generated in $(( (t1 - t0) / 1000000 )) ms, stored in $(( (t2 - t1) / 1000000 )) ms)"

# ---- mount ------------------------------------------------------------------------
mkdir "$MNT"
t0=$(now_ns)
"$BUILD/cmkcertfs" -f -c "$W/etc/cmkcert.conf" "$MNT" 2>"$W/cmkcertfs.log" &
FSPID=$!
i=0
until is_mounted "$MNT"; do
	i=$((i + 1))
	if [ $i -gt 600 ] || ! kill -0 "$FSPID" 2>/dev/null; then
		echo "cmkcertfs did not mount:" >&2
		cat "$W/cmkcertfs.log" >&2
		exit 1
	fi
	sleep 0.05
done
t1=$(now_ns)
echo "mount: serving after $(( (t1 - t0) / 1000000 )) ms"

# ---- ls -l of /certs --------------------------------------------------------------------
t0=$(now_ns); files=$(ls -l "$MNT/certs" | grep -c '^-'); t1=$(now_ns)
ls -l "$MNT/certs" >/dev/null; t2=$(now_ns)
[ "$files" -eq "$stored" ] || { echo "ls -l listed $files files, expected $stored" >&2; exit 1; }

# The same directory on tmpfs, for scale.
SHM=$(mktemp -d /dev/shm/cmkbench.XXXXXX)
mkdir "$SHM/certs"
cp "$MNT/certs/"* "$SHM/certs/"
t3=$(now_ns); ls -l "$SHM/certs" >/dev/null; t4=$(now_ns)

# ---- open + read + close -------------------------------------------------------------------
T=bench00000-aws_kms
cat "$MNT/certs/$T.crt" > "$SHM/$T.crt"
cat "$MNT/private/$T.key" > "$SHM/$T.key"
cat "$MNT/bundle/$T.pem" > "$SHM/$T.pem"
chmod 400 "$SHM/$T.key" "$SHM/$T.pem"
files_to_time() {
	echo "$SHM/$T.crt" "$MNT/certs/$T.crt" "$SHM/$T.key" "$MNT/private/$T.key" "$SHM/$T.pem" "$MNT/bundle/$T.pem"
}
table() {
	awk '
		NR % 2 == 1 { tmpfs = $2; next }
		{
			n = split($1, p, "/")
			printf "  %-9s %5d bytes   tmpfs %7.2f us/op   mount %7.2f us/op   mount/tmpfs %5.1fx\n", \
				"/" p[n - 1], $3, tmpfs, $2, $2 / tmpfs
		}' "$1"
}
# shellcheck disable=SC2046
"$W/fsbench" "$ITER" $(files_to_time) > "$W/fsbench.out"
echo
echo "open + read to EOF + close, $ITER rounds each in one process ($(nproc) CPUs, scheduler's choice)"
table "$W/fsbench.out"
# Each FUSE request wakes a daemon thread; on virtual machines a wake-up on another CPU can cost
# more than the request.  The same rounds with the reader and every daemon thread on CPU 0:
if [ "$(nproc)" -gt 1 ] && command -v taskset >/dev/null; then
	taskset -a -p -c 0 "$FSPID" >/dev/null
	# shellcheck disable=SC2046
	taskset -c 0 "$W/fsbench" "$ITER" $(files_to_time) > "$W/fsbench-cpu0.out"
	taskset -a -p -c "0-$(( $(nproc) - 1 ))" "$FSPID" >/dev/null
	echo "the same with the reader and the daemon on one CPU"
	table "$W/fsbench-cpu0.out"
fi
echo
# The key rows above include the audit trail: every key read is one fsync'd line, written by the
# daemon's audit thread; when it falls behind, key reads wait for it.  To show the daemon's own
# cost, the same key rounds against a second mount whose trail is on tmpfs (fsync is free there).
sed "s|^path = $W/audit.log|path = $SHM/audit.log|" "$W/etc/cmkcert.conf" > "$W/etc/shm-audit.conf"
chmod 600 "$W/etc/shm-audit.conf"
mkdir "$W/mnt2"
"$BUILD/cmkcertfs" -f -c "$W/etc/shm-audit.conf" "$W/mnt2" 2>>"$W/cmkcertfs.log" &
FSPID2=$!
i=0
until is_mounted "$W/mnt2"; do
	i=$((i + 1)); [ $i -le 600 ] && kill -0 "$FSPID2" 2>/dev/null || { echo "second mount failed" >&2; exit 1; }
	sleep 0.05
done
"$W/fsbench" "$ITER" "$SHM/$T.key" "$W/mnt2/private/$T.key" "$SHM/$T.pem" "$W/mnt2/bundle/$T.pem" \
	> "$W/fsbench-shm.out"
fusermount3 -u "$W/mnt2"
wait "$FSPID2" || { echo "second mount: daemon exited $?" >&2; exit 1; }
echo "keys with the audit trail on tmpfs (the daemon's own cost: unseal, locked memory, direct I/O)"
table "$W/fsbench-shm.out"
echo

ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%8.1f ms", (b - a) / 1e6 }'; }
echo "ls -l of /certs with $files certificates"
echo "  first (nothing cached)  $(ms "$t0" "$t1")"
echo "  again (kernel caches)   $(ms "$t1" "$t2")"
echo "  same files on tmpfs     $(ms "$t3" "$t4")"

# Unmounting drains the audit queue; then every key read of the run is on disk.
t0=$(now_ns)
fusermount3 -u "$MNT"
wait "$FSPID" && status=0 || status=$?
FSPID=
t1=$(now_ns)
reads=$(grep -c '"privateKeyRead"' "$W/audit.log" || true)
echo
echo "unmount: $(ms "$t0" "$t1"), daemon exit status $status; audit trail: $reads privateKeyRead events"
if grep -v ': info: ' "$W/cmkcertfs.log" | grep -q .; then
	echo
	echo "cmkcertfs said:"
	grep -v ': info: ' "$W/cmkcertfs.log"
fi
