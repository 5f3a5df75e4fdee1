#!/usr/bin/env bash
# Installs every Debian 12 package Braid needs to build, test and benchmark.
# The single source of truth for dependencies: CI, `make deps` and `make test` all run this.
# Idempotent: when every package is already installed it does nothing (no network).
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build pkg-config
  # rdma-core: verbs headers/library for the ibverbs provider
  libibverbs-dev ibverbs-providers
  # wire protocol
  protobuf-compiler libprotobuf-dev
  # the agent (braidd): gRPC (+ the C++ plugin for protoc), Prometheus exporter, YAML config,
  # structured logging; promtool (package prometheus) checks the /metrics page in tests; civetweb
  # (the exporter's HTTP server) is asked directly whether it can listen on IPv6
  libgrpc++-dev protobuf-compiler-grpc prometheus-cpp-dev libcivetweb-dev libyaml-cpp-dev
  libspdlog-dev libcli11-dev
  # braidctl: sha256 of copied files; braidd: its certificate's identity; the openssl tool makes
  # the test CA and certificates (security tests, the demo's mutual TLS)
  libssl-dev openssl
  # deployment: the chart renderer (Go text/template + sprig, tools/helm-render), Prometheus
  # itself (a real server scrapes braidd in the tests; promtool), JSON for its API in tests
  golang-go golang-github-masterminds-sprig-dev golang-gopkg-yaml.v3-dev prometheus
  nlohmann-json3-dev
  # tests and benchmarks (valgrind: instruction counts in `make bench`; clang + its runtime:
  # the libFuzzer target)
  libgtest-dev libgmock-dev libbenchmark-dev valgrind clang libclang-rt-14-dev
  # the TCP loopback benchmark's references (iperf3; libfabric's tcp provider for RMA); network
  # namespaces for the link-fault test
  iperf3 libfabric-dev iproute2
  # unmodified verbs programs run on libbraid_verbs.so (ibv_rc_pingpong, perftest)
  ibverbs-utils perftest
  # the Python SDK: its native module (pybind11 over the C++ SDK), the gRPC stubs' runtime
  # (the stubs are generated with protoc's grpc_python_plugin), numpy for buffers, pytest
  python3-dev pybind11-dev python3-numpy python3-grpcio python3-protobuf python3-pytest
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends "${missing[@]}"
