# Braid entry points. `make test` is what CI runs (.ci/run); `make demo` is the main job.
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= 2
CMAKE_ARGS ?=
# Seconds each fuzzer (frame parser, session ring, control requests) runs in `make test` (longer: make fuzz-run FUZZ_SECONDS=600).
FUZZ_SECONDS ?= 15
# Property-test scenarios: the release run uses the test's default (2000); the sanitizer run fewer.
ASAN_VQP_SCENARIOS ?= 600

.PHONY: all deps configure build test unit-test asan-test tsan-test fuzz fuzz-run bench demo demo-soft format \
  clean

all: build

deps:
	bash scripts/install_deps.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_ARGS)

configure: deps $(BUILD)/build.ninja

build: configure
	ninja -C $(BUILD) -j$(JOBS)

unit-test: build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

# The unit and conformance tests again under AddressSanitizer + UndefinedBehaviorSanitizer.
asan-test: deps
	cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DBRAID_SANITIZE=ON \
	  -DBRAID_BUILD_BENCH=OFF $(CMAKE_ARGS)
	ninja -C $(ASAN_BUILD) -j$(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 BRAID_VQP_SCENARIOS=$(ASAN_VQP_SCENARIOS) \
	  ctest --output-on-failure -j$(JOBS)

# The engine's cross-thread paths (command queue, sinks, watchers, the engine thread) under
# ThreadSanitizer: the engine and queue tests of the unit binary.
TSAN_BUILD ?= build-tsan
tsan-test: deps
	cmake -S . -B $(TSAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBRAID_TSAN=ON \
	  -DBRAID_BUILD_BENCH=OFF $(CMAKE_ARGS)
	ninja -C $(TSAN_BUILD) -j$(JOBS) braid_unit_tests
	TSAN_OPTIONS=halt_on_error=1 $(TSAN_BUILD)/tests/braid_unit_tests --gtest_brief=1 \
	  --gtest_filter='EngineTest.*:EnginePorts*:MpscQueue*:SegmentedQueue*:TcpSlowQueue.*'

# libFuzzer target for the soft provider's frame parser (clang; ASan + UBSan).
FUZZ_DIR := $(BUILD)/fuzz
$(FUZZ_DIR)/wire_format_fuzz: tests/fuzz/wire_format_fuzz.cc dataplane/soft/wire_format.cc \
    dataplane/soft/wire_format.h dataplane/verbs/gid.cc | deps
	mkdir -p $(FUZZ_DIR)/corpus
	clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -I. \
	  tests/fuzz/wire_format_fuzz.cc dataplane/soft/wire_format.cc dataplane/verbs/gid.cc \
	  -o $@

# libFuzzer target for what the engine reads from a session's submission ring.
$(FUZZ_DIR)/session_ring_fuzz: tests/fuzz/session_ring_fuzz.cc dataplane/session/ring_entry.cc \
    dataplane/session/ring_entry.h dataplane/session/spsc_ring.h | deps
	mkdir -p $(FUZZ_DIR)/session_corpus
	clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -I. \
	  tests/fuzz/session_ring_fuzz.cc dataplane/session/ring_entry.cc -o $@

# libFuzzer target for the control plane's parsers of what callers send (business cards, VQP
# requests, transfer ops, list pages: server/request_mapping.cc), over protobuf code generated here. Seeds:
# tests/fuzz/control_seeds/<kind>_*.txtpb, encoded with the kind's byte in front.
FUZZ_GEN := $(FUZZ_DIR)/gen
CONTROL_FUZZ_SRCS := tests/fuzz/control_request_fuzz.cc server/request_mapping.cc \
  dataplane/vqp/business_card.cc dataplane/vqp/vqp_types.cc dataplane/verbs/gid.cc \
  dataplane/common/status.cc
$(FUZZ_DIR)/control_request_fuzz: $(CONTROL_FUZZ_SRCS) server/request_mapping.h \
    dataplane/vqp/business_card.h proto/braid/v1/agent.proto proto/braid/v1/business_card.proto \
    $(wildcard tests/fuzz/control_seeds/*.txtpb) | deps
	mkdir -p $(FUZZ_GEN) $(FUZZ_DIR)/control_corpus
	protoc -I proto --cpp_out=$(FUZZ_GEN) proto/braid/v1/agent.proto proto/braid/v1/business_card.proto
	for seed in tests/fuzz/control_seeds/*.txtpb; do \
	  name=$$(basename $$seed .txtpb); \
	  case $$name in card_*) kind=0 type=BusinessCard;; create_*) kind=1 type=CreateVirtualQpRequest;; \
	    list_*) kind=3 type=ListVirtualQpsRequest;; *) kind=2 type=TransferOp;; esac; \
	  { printf "\\$$kind"; protoc -I proto --encode=braid.v1.$$type proto/braid/v1/agent.proto \
	    < $$seed; } > $(FUZZ_DIR)/control_corpus/seed_$$name || exit 1; \
	done
	clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -I. -I$(FUZZ_GEN) \
	  $(CONTROL_FUZZ_SRCS) $(FUZZ_GEN)/braid/v1/agent.pb.cc $(FUZZ_GEN)/braid/v1/business_card.pb.cc \
	  -lprotobuf -o $@

fuzz: $(FUZZ_DIR)/wire_format_fuzz $(FUZZ_DIR)/session_ring_fuzz $(FUZZ_DIR)/control_request_fuzz

fuzz-run: fuzz
	$(FUZZ_DIR)/wire_format_fuzz -max_total_time=$(FUZZ_SECONDS) -seed=1 -print_final_stats=1 \
	  $(FUZZ_DIR)/corpus
	$(FUZZ_DIR)/session_ring_fuzz -max_total_time=$(FUZZ_SECONDS) -seed=1 -print_final_stats=1 \
	  $(FUZZ_DIR)/session_corpus
	$(FUZZ_DIR)/control_request_fuzz -max_total_time=$(FUZZ_SECONDS) -seed=1 -print_final_stats=1 \
	  $(FUZZ_DIR)/control_corpus

test: fuzz-run unit-test asan-test tsan-test

bench: build
	mkdir -p $(BUILD)/bench-results
	$(BUILD)/bench/braid_soft_qp_bench --benchmark_out=$(BUILD)/bench-results/soft_qp_bench.json \
	  --benchmark_out_format=json --benchmark_min_time=0.2
	$(BUILD)/bench/braid_vqp_overhead_bench \
	  --benchmark_out=$(BUILD)/bench-results/vqp_overhead_bench.json \
	  --benchmark_out_format=json --benchmark_min_time=0.5
	$(BUILD)/bench/braid_engine_session_bench | tee $(BUILD)/bench-results/engine_session.txt
	bash bench/vqp_instructions.sh $(BUILD)/bench/braid_vqp_icount | \
	  tee $(BUILD)/bench-results/vqp_instructions.txt
	bash bench/tcp_loopback.sh $(BUILD)/bench/braid_tcp_bench | \
	  tee $(BUILD)/bench-results/tcp_loopback.txt
	bash bench/libfabric_compare.sh $(BUILD)/bench/braid_tcp_bench \
	  $(BUILD)/bench/braid_libfabric_rma_bench | tee $(BUILD)/bench-results/libfabric_compare.txt
	bash bench/soft_verbs_perftest.sh $(BUILD)/dataplane/soft_verbs/libbraid_verbs.so | \
	  tee $(BUILD)/bench-results/soft_verbs_perftest.txt
	$(BUILD)/bench/braid_agent_bench $(BUILD)/bench-results/tcp_loopback.txt --rounds=9 \
	  --tcp-bench=$(BUILD)/bench/braid_tcp_bench | \
	  tee $(BUILD)/bench-results/agent_e2e.txt
	for path in ring grpc; do bash bench/braidctl_copy.sh $(BUILD) $$path 5; done | \
	  tee $(BUILD)/bench-results/braidctl_copy.txt
	for path in ring grpc; do bash bench/python_sdk.sh $(BUILD) $$path 5; done | \
	  tee $(BUILD)/bench-results/python_sdk.txt
	$(BUILD)/bench/braid_agent_scale_bench 1000 | tee $(BUILD)/bench-results/agent_scale.txt
	$(BUILD)/bench/braid_agent_tls_bench 3 | tee $(BUILD)/bench-results/agent_tls.txt
	$(BUILD)/bench/braid_agent_contention_bench 5 | tee $(BUILD)/bench-results/agent_contention.txt
	for poll in spin sleep; do \
	  $(BUILD)/bench/braid_tcp_bench --poll=$$poll --contention=5 --seconds=1; \
	done | tee $(BUILD)/bench-results/soft_contention.txt
	bash bench/netns_shaped_links.sh $(BUILD)/server/braidd \
	  $(BUILD)/tests/integration/braid_netns_recovery_driver | \
	  tee $(BUILD)/bench-results/netns_shaped_links.txt
	@echo "results: $(BUILD)/bench-results/"

# Two local agents, an 8-QP VQP, 1 GiB moved and verified (scripts/demo.sh).
demo: configure
	ninja -C $(BUILD) -j$(JOBS) braidd braidctl
	bash scripts/demo.sh $(BUILD)

# The in-process demo: soft NICs on the in-memory link, a NIC failure, VQP failover.
demo-soft: build
	$(BUILD)/examples/braid_soft_demo

format:
	git ls-files '*.h' '*.cc' | xargs clang-format -i

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD)
