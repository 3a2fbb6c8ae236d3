#!/bin/sh
# bench/run.sh BUILD - the cmkcertfs performance table (`make bench`).
#
#  1. open + read to EOF + close of one .crt, .key and bundle through the
#     mount, against the same bytes on tmpfs, CMKBENCH_ITER rounds each in
#     one process (bench/fsbench.c);
#  2. `ls -l` of /certs holding CMKBENCH_CERTS certificates, first right
#     after mounting (nothing cached) and again (kernel caches warm);
#  3. the store and the CLI at scale: a store of CMKBENCH_SCALE certificates
#     (default 100000; 0 skips it), bench/scale.py says what it measures.
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
T=bench00000-aws_kms              # the tenant whose files are timed

W=$(mktemp -d /tmp/cmkbench.XXXXXX)
SHM=$(mktemp -d /dev/shm/cmkbench.XXXXXX)
chmod 755 "$W"
MOUNTS=                           # "pid:mountpoint" of every daemon started here

cleanup() {
	for m in $MOUNTS; do
		fusermount3 -u "${m#*:}" 2>/dev/null || fusermount3 -u -z "${m#*:}" 2>/dev/null || true
		wait "${m%%:*}" 2>/dev/null || true
	done
	rm -rf "$SHM" "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ns() { date +%s%N; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%8.1f ms", (b - a) / 1e6 }'; }
is_mounted() { awk -v m="$1" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo; }

# start_fs CONF MNT: start the daemon in the foreground (as a job) and wait for the mount.
start_fs() {
	mkdir -p "$2"
	"$BUILD/cmkcertfs" -f -n -c "$1" "$2" 2>>"$W/cmkcertfs.log" &
	MOUNTS="$MOUNTS $!:$2"
	FSPID=$!
	i=0
	until is_mounted "$2"; do
		i=$((i + 1))
		if [ $i -gt 600 ] || ! kill -0 "$FSPID" 2>/dev/null; then
			echo "cmkcertfs did not mount $2:" >&2
			cat "$W/cmkcertfs.log" >&2
			exit 1
		fi
		sleep 0.05
	done
}

# stop_fs MNT PID: unmount and check the daemon exited 0.
stop_fs() {
	fusermount3 -u "$1"
	wait "$2" && st=0 || st=$?
	MOUNTS=$(echo "$MOUNTS" | sed "s|$2:$1||")
	[ "$st" -eq 0 ] || { echo "cmkcertfs exited $st" >&2; exit 1; }
}

# table FSBENCH_OUTPUT: lines come in threes per file: tmpfs, nullfs, cmkcertfs.
table() {
	awk '
		BEGIN { split("/certs /private /bundle", label, " ") }
		NR % 3 == 1 { tmpfs = $2; next }
		NR % 3 == 2 { null = $2; next }
		{
			printf "  %-9s %5d B  tmpfs %6.1f  null FUSE %6.1f  cmkcertfs %6.1f us/op   cmkcertfs/tmpfs %5.1fx  /null %4.1fx\n", \
				label[NR / 3], $3, tmpfs, null, $2, $2 / tmpfs, $2 / null
		}' "$1"
}

# ---- tools ----------------------------------------------------------------------
MBED_LIBS=$(pkg-config --libs mbedtls mbedx509 mbedcrypto 2>/dev/null || echo -lmbedtls -lmbedx509 -lmbedcrypto)
$CC -O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -o "$W/fsbench" "$ROOT/bench/fsbench.c"
# shellcheck disable=SC2046
$CC -O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror $(pkg-config --cflags fuse3) -o "$W/nullfs" \
	"$ROOT/bench/nullfs.c" $(pkg-config --libs fuse3)
# shellcheck disable=SC2046
$CC -O2 -std=c11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -Wall -Wextra -Werror -I"$ROOT/include" \
	$(pkg-config --cflags libcurl libssl libcrypto inih jansson) -o "$W/populate" "$ROOT/bench/populate.c" \
	"$BUILD/libcmkcert.a" $(pkg-config --libs libcurl libssl libcrypto inih jansson) $MBED_LIBS -ldb -lpthread

# ---- a store with N active certificates -------------------------------------------
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
# The same with the audit trail on tmpfs, where fsync costs nothing.  A store of its own: a
# store's trail is anchored in it, and another file is refused as a trail that was cut.
sed -e "s|^path = $W/audit.log|path = $SHM/audit.log|" -e "s|^path = $W/store|path = $W/store2|" \
	"$W/etc/cmkcert.conf" > "$W/etc/shm-audit.conf"
chmod 600 "$W/etc/cmkcert.conf" "$W/etc/shm-audit.conf"

t0=$(now_ns)
"$PYTHON" "$ROOT/bench/gencerts.py" "$N" "$W/gen"
t1=$(now_ns)
stored=$("$W/populate" "$W/etc/cmkcert.conf" "$W/gen/pairs.pem" "$W/gen/ca-chain.pem" bench)
t2=$(now_ns)
"$W/populate" "$W/etc/shm-audit.conf" "$W/gen/pairs.pem" "$W/gen/ca-chain.pem" bench >/dev/null
rm -f "$W/gen/pairs.pem"
echo "store: $stored active certificates (made in $(ms "$t0" "$t1"), stored in $(ms "$t1" "$t2"))"

# ---- mount, ls -l ----------------------------------------------------------------------
MNT=$W/mnt
t0=$(now_ns)
start_fs "$W/etc/cmkcert.conf" "$MNT"
t1=$(now_ns)
echo "mount: serving after $(ms "$t0" "$t1")"

t0=$(now_ns); files=$(ls -l "$MNT/certs" | grep -c '^-'); t1=$(now_ns)
ls -l "$MNT/certs" >/dev/null; t2=$(now_ns)
[ "$files" -eq "$stored" ] || { echo "ls -l listed $files files, expected $stored" >&2; exit 1; }
mkdir "$SHM/certs"
cp "$MNT/certs/"* "$SHM/certs/"
t3=$(now_ns); ls -l "$SHM/certs" >/dev/null; t4=$(now_ns)

# ---- open + read + close ----------------------------------------------------------------
cat "$MNT/certs/$T.crt" > "$SHM/$T.crt"
cat "$MNT/private/$T.key" > "$SHM/$T.key"
cat "$MNT/bundle/$T.pem" > "$SHM/$T.pem"
chmod 400 "$SHM/$T.key" "$SHM/$T.pem"
# The yardstick: the same bytes from a FUSE file system that does nothing else.
mkdir "$W/null"
"$W/nullfs" "$W/null" "$SHM/$T.crt" "$SHM/$T.key" "$SHM/$T.pem" 2>>"$W/cmkcertfs.log" &
NULLPID=$!
MOUNTS="$MOUNTS $NULLPID:$W/null"
i=0
until is_mounted "$W/null"; do
	i=$((i + 1)); [ $i -le 200 ] || { echo "nullfs did not mount" >&2; exit 1; }
	sleep 0.05
done

rounds() {  # rounds MOUNTPOINT [COMMAND PREFIX...]: tmpfs, nullfs, cmkcertfs for each file
	m=$1
	shift
	"$@" "$W/fsbench" "$ITER" \
		"$SHM/$T.crt" "$W/null/$T.crt" "$m/certs/$T.crt" \
		"$SHM/$T.key" "$W/null/$T.key" "$m/private/$T.key" \
		"$SHM/$T.pem" "$W/null/$T.pem" "$m/bundle/$T.pem"
}

rounds "$MNT" > "$W/run1.out"
echo
echo "open + read to EOF + close, $ITER rounds per file in one process ($(nproc) CPUs)"
table "$W/run1.out"
# A FUSE request wakes a daemon thread; on a virtual machine, a wake-up on another CPU can cost
# more than the request itself.  The same rounds with the reader and every daemon thread on CPU 0:
if [ "$(nproc)" -gt 1 ] && command -v taskset >/dev/null; then
	all="0-$(( $(nproc) - 1 ))"
	taskset -a -p -c 0 "$FSPID" >/dev/null
	taskset -a -p -c 0 "$NULLPID" >/dev/null
	rounds "$MNT" taskset -c 0 > "$W/run2.out"
	taskset -a -p -c "$all" "$FSPID" >/dev/null
	taskset -a -p -c "$all" "$NULLPID" >/dev/null
	echo "the same, reader and daemons on one CPU"
	table "$W/run2.out"
fi
t5=$(now_ns)
stop_fs "$MNT" "$FSPID"
t6=$(now_ns)
reads=$(grep -c '"privateKeyRead"' "$W/audit.log" || true)

# Every key read above also appended one fsync'd line to the audit trail (written by the
# daemon's audit thread; key reads wait when it falls behind).  With the trail on tmpfs:
start_fs "$W/etc/shm-audit.conf" "$W/mnt2"
rounds "$W/mnt2" > "$W/run3.out"
stop_fs "$W/mnt2" "$FSPID"
stop_fs "$W/null" "$NULLPID"
echo "the same, audit trail on tmpfs (no fsync)"
table "$W/run3.out"
echo
echo "ls -l of /certs with $files certificates"
echo "  first (nothing cached)  $(ms "$t0" "$t1")"
echo "  again (kernel caches)   $(ms "$t1" "$t2")"
echo "  same files on tmpfs     $(ms "$t3" "$t4")"
echo
echo "unmount (drains the audit queue): $(ms "$t5" "$t6"); audit trail: $reads privateKeyRead events"
if grep -v ': info: ' "$W/cmkcertfs.log" | grep -q .; then
	echo
	echo "cmkcertfs said:"
	grep -v ': info: ' "$W/cmkcertfs.log"
fi

# ---- at scale ---------------------------------------------------------------------------
SCALE=${CMKBENCH_SCALE:-100000}
if [ "$SCALE" -gt 0 ]; then
	echo
	echo "at scale: a store of $SCALE active certificates (CMKBENCH_SCALE)"
	"$PYTHON" "$ROOT/bench/scale.py" "$BUILD" "$W/populate" "$SCALE"
fi

# The project's other benchmarks (bench/*_bench.py BUILD), each with its own table.
for b in "$ROOT"/bench/*_bench.py; do
	[ -e "$b" ] || continue
	echo
	"$PYTHON" "$b" "$BUILD"
done
