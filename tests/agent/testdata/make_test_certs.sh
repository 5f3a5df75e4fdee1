#!/bin/bash
# Test PKI for the security tests: two CAs and certificates whose identities (URI SANs) the tests
# configure as roles. Usage: make_test_certs.sh DIR. EC P-256 keys (fast); nothing leaves DIR.
set -euo pipefail
dir=$1
mkdir -p "$dir"
cd "$dir"

ca() {  # name
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" \
    -out "$1.crt" -subj "/CN=braid test $1" -days 2 2>/dev/null
}

cert() {  # name ca days san...
  local name=$1 ca=$2 days=$3
  shift 3
  local san
  san=$(IFS=,; echo "$*")
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$name.key" \
    -out "$name.csr" -subj "/CN=$name" 2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$san" > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA "$ca.crt" -CAkey "$ca.key" -CAcreateserial \
    -days "$days" -extfile "$name.ext" -out "$name.crt" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}

ca ca1
ca ca2
cert agent-a ca1 2 URI:spiffe://braid/agent/a IP:127.0.0.1 DNS:localhost
cert agent-b ca1 2 URI:spiffe://braid/agent/b IP:127.0.0.1 DNS:localhost
cert agent-a-rotated ca2 2 URI:spiffe://braid/agent/a IP:127.0.0.1 DNS:localhost
cert client-a ca1 2 URI:spiffe://braid/client/a
cert client-b ca1 2 URI:spiffe://braid/client/b
cert operator ca1 2 URI:spiffe://braid/operator
cert admin ca1 2 URI:spiffe://braid/admin
cert mallory ca1 2 URI:spiffe://braid/client/mallory
cert other-ca ca2 2 URI:spiffe://braid/client/a
cert expired ca1 -1 URI:spiffe://braid/client/a
