#!/bin/bash
# make demo: start the bundled OpenBao test server and a keystore that
# demands client certificates, issue a tenant's certificate with cmkcert,
# mount cmkcertfs and use the mounted files in a real mTLS connection.
set -euo pipefail

build=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/cmkcert-demo.XXXXXX)
mnt="$work/mnt"
pids=()

cleanup() {
	set +e
	if mountpoint -q "$mnt" 2>/dev/null; then
		fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt"
	fi
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
	rm -rf "$work"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Starting the OpenBao test server"
coproc BAO { exec /usr/bin/python3 "$root/tests/baosim/baosim.py" --addr 127.0.0.1:0 --dir "$work/bao" 2>"$work/bao.log"; }
pids+=("$BAO_PID")
read -r -t 30 ready <&"${BAO[0]}"
echo "$ready"
conf="$work/bao/cmkcert.conf"

say "Starting a keystore (openssl s_server) that accepts only client certificates from the PKI CA"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=demo-keystore-ca \
	-addext basicConstraints=critical,CA:TRUE -keyout "$work/ks-ca.key" -out "$work/ks-ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
	-keyout "$work/ks.key" -out "$work/ks.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$work/ks.ext"
openssl x509 -req -in "$work/ks.csr" -CA "$work/ks-ca.pem" -CAkey "$work/ks-ca.key" -CAcreateserial \
	-days 1 -extfile "$work/ks.ext" -out "$work/ks.crt" 2>/dev/null
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
openssl s_server -accept "127.0.0.1:$port" -cert "$work/ks.crt" -key "$work/ks.key" \
	-CAfile "$work/bao/pki-ca-chain.pem" -Verify 1 -verify_return_error -www >"$work/ks.log" 2>&1 &
pids+=("$!")
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
echo "keystore listening on 127.0.0.1:$port"

say "cmkcert check (story 1)"
"$build/cmkcert" -c "$conf" check

say "cmkcert keystore add (story 2): the use case's request for tenant acme-corp-12345"
cat >"$work/request.json" <<JSON
{
  "tenant_id": "acme-corp-12345",
  "keystore_config": {
    "type": "aws_kms",
    "connection_endpoints": ["127.0.0.1:$port"],
    "authentication_method": "client_certificate",
    "certificate_required": true
  }
}
JSON
cat "$work/request.json"
"$build/cmkcert" -c "$conf" keystore add --json "$work/request.json" --server-ca "$work/ks-ca.pem"
"$build/cmkcert" -c "$conf" list

if [ -x "$build/cmkcertfs" ]; then
	say "Mounting cmkcertfs at $mnt"
	mkdir -p "$mnt"
	"$build/cmkcertfs" -f -c "$conf" "$mnt" 2>"$work/cmkcertfs.log" &
	pids+=("$!")
	for _ in $(seq 100); do mountpoint -q "$mnt" && break; sleep 0.05; done
	ls -l "$mnt/certs" "$mnt/private" "$mnt/ca"

	say "mTLS connection to the keystore with the mounted certificate and key"
	echo | openssl s_client -connect "127.0.0.1:$port" -servername localhost -CAfile "$work/ks-ca.pem" \
		-cert "$mnt/certs/acme-corp-12345-aws_kms.crt" -key "$mnt/private/acme-corp-12345-aws_kms.key" \
		-verify_return_error -brief 2>&1 | sed -n '1,8p'
	echo | openssl s_client -connect "127.0.0.1:$port" -servername localhost -CAfile "$work/ks-ca.pem" \
		-cert "$mnt/certs/acme-corp-12345-aws_kms.crt" -key "$mnt/private/acme-corp-12345-aws_kms.key" \
		-verify_return_error >/dev/null 2>&1 && echo "handshake with the tenant's certificate: OK"
fi

say "Audit trail"
"$build/cmkcert" -c "$conf" audit verify
tail -n 3 "$work/bao/audit.log"
