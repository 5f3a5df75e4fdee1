#!/usr/bin/env bash
# Builds helm-render from Debian's Go packages only (golang-go, golang-github-masterminds-sprig-dev,
# golang-gopkg-yaml.v3-dev), offline, in GOPATH mode. Debian keeps sprig v3 and semver v3 without
# their /v3 path element; a small overlay GOPATH adds it.
set -euo pipefail
OUT=$1
SRC=$(cd "$(dirname "$0")" && pwd)
WORK=$(dirname "$OUT")/helm-render-gopath
mkdir -p "$WORK/src/github.com/Masterminds/sprig" "$WORK/src/github.com/Masterminds/semver"
ln -sfn /usr/share/gocode/src/github.com/Masterminds/sprig "$WORK/src/github.com/Masterminds/sprig/v3"
ln -sfn /usr/share/gocode/src/github.com/Masterminds/semver "$WORK/src/github.com/Masterminds/semver/v3"
GO111MODULE=off GOPATH="$WORK:/usr/share/gocode" GOCACHE="$WORK/cache" GOFLAGS= GOPROXY=off \
  go build -o "$OUT" "$SRC/main.go"
