#!/usr/bin/env python3
"""Reverts each fix the design lists, one at a time, and checks that its named test fails.

Every fix below is a small edit that undoes it (the code as it was, or as a plausible mistake
would leave it). For each: apply the edit, rebuild the unit-test binary, run the tests named for
the fix (as `make test` runs them), restore the file. A fix whose revert passes its tests is a
hole in the safety net; the script lists it and exits 1.

  python3 scripts/revert_check.py            # every fix (about 1 minute each on 2 cores)
  python3 scripts/revert_check.py --check    # only that every edit still applies
  python3 scripts/revert_check.py dqplb      # the fixes whose name contains "dqplb"

Run it from the repository root after `make build`; it restores every file it touches, also when
interrupted.
"""
import os
import re
import subprocess
import sys

BUILD = "build"
BINARY = os.path.join(BUILD, "tests", "braid_unit_tests")

# (invariant or fix in doc/vqp.md / doc/soft_provider.md words, file, [(old, new), ...], tests)
FIXES = [
    ("route by tag, never by opcode: an error completion is routed by its tag",
     "dataplane/vqp/virtual_qp.cc",
     [("const WrKind kind = WrTag::Kind(wc.wr_id);",
       "const WrKind kind = (wc.opcode & IBV_WC_RECV) ? WrKind::kPoolRecv : WrTag::Kind(wc.wr_id);")],
     "GapRegressionTest.ErrorCompletionRoutedByTagNotOpcode"),
    ("a dead QP gets no new work",
     "dataplane/vqp/vqp_schedule.cc",
     [("if (q.health != QpHealth::kHealthy || (device >= 0 && q.device != device)) continue;",
       "if (device >= 0 && q.device != device) continue;")],
     "GapRegressionTest.DeadQpIsNeverScheduledAgain"),
    ("every virtual WR completes once: a failed WR is reported once nothing of it is in flight",
     "dataplane/vqp/vqp_send.cc",
     [("        if (e.inflight > 0) return true;\n        e.stage = e.after_data",
       "        if (e.inflight > 0 && !e.aborted) return true;\n        e.stage = e.after_data")],
     "GapRegressionTest.AFailedWrIsReportedOnlyOnceNothingOfItIsInFlight"),
    ("every virtual WR completes once: a WR dispatched in part ends with an error",
     "dataplane/vqp/vqp_send.cc",
     [("          if (r == PostResult::kNoQp) {\n            e.status = MergeStatus(e.status, last_error_);\n"
       "            e.aborted = true;\n          }\n        }\n        e.stage = SendStage::kTail;",
       "        }\n        e.stage = SendStage::kTail;")],
     "GapRegressionTest.AWrWhoseRestFindsNoQpInServiceCompletesWithAnError"),
    ("idempotent pieces fail over: a write fragment on a dead QP is re-posted on a healthy one",
     "dataplane/vqp/vqp_send_completion.cc",
     [("(f.stream || f.kind == WrKind::kFence || (data_piece && config_.failover && !e.op_fault))",
       "(f.stream || f.kind == WrKind::kFence)")],
     "*QpRecoveryTest.*:GapRegressionTest.*"),
    ("idempotent pieces fail over: an operation's own fault is not replayed",
     "dataplane/vqp/vqp_send_completion.cc",
     [("(data_piece && config_.failover && !e.op_fault)", "(data_piece && config_.failover)")],
     "*ABadKeyFailsOnlyItsOperationAndOnlyTheQpItHit*"),
    ("idempotent pieces fail over: at most the retry budget",
     "dataplane/vqp/vqp_send_completion.cc",
     [("const bool within_budget = f.stream || f.replays < std::max<uint32_t>(config_.retry_budget, 1);",
       "const bool within_budget = true;")],
     "PhysicalPathTest.AFragmentIsRepostedAtMostItsRetryBudgetThenItsWrFails"),
    ("idempotent pieces fail over: SEND and atomics are never replayed",
     "dataplane/vqp/vqp_send_completion.cc",
     [("const bool data_piece = f.kind == WrKind::kFragment && !f.tail;",
       "const bool data_piece = (f.kind == WrKind::kFragment || f.kind == WrKind::kMessage) && !f.tail;"),
      ("!destroying_ && f.kind != WrKind::kMessage &&", "!destroying_ &&")],
     "*QpRecoveryTest.ADeadMessageQpIsRecoveredToo*"),
    ("dead QPs come back: a recovered QP on a drained device stays out of service",
     "dataplane/vqp/vqp_health.cc",
     [("SetHealth(qp_index, DeviceDrained(q.device) ? QpHealth::kDraining : QpHealth::kHealthy);",
       "SetHealth(qp_index, QpHealth::kHealthy);")],
     "*AQpRecoveredOnADrainedDeviceStaysOutOfService*"),
    ("dead QPs come back: a QP that keeps dying sits out its cooldown",
     "dataplane/vqp/vqp_health.cc",
     [("q.strikes >= 2 && healthy_data_qps_ > 0 &&", "false &&")],
     "CooldownTest.*"),
    ("errors reach the caller: send flags the layer would not honour are refused",
     "dataplane/vqp/vqp_send.cc",
     [("if (wr.send_flags & ~static_cast<unsigned int>(IBV_SEND_SIGNALED)) {", "if (false) {")],
     "GapRegressionNotesTest.UnsupportedSendFlagsAreRefused"),
    ("multi-QP work is signalled",
     "dataplane/vqp/vqp_send.cc",
     [("if (multi() && !(wr.send_flags & IBV_SEND_SIGNALED)) {", "if (false) {")],
     "GapRegressionTest.UnsignaledMultiQpOperationRejected"),
    ("keys are per device: a missing local device key is an error at post time",
     "dataplane/vqp/vqp_send.cc",
     [("if (local_keys_.Get(local, device) == 0) {", "if (false) {")],
     "GapRegressionTest.MissingDeviceKeyIsAnErrorNotAnException"),
    ("keys are per device: a missing remote device key is an error at post time",
     "dataplane/vqp/vqp_send.cc",
     [("if (remote != UINT32_MAX && remote_keys_.Get(remote, remote_device) == 0) {", "if (false) {")],
     "PhysicalPathTest.AMissingRemoteDeviceKeyIsAnErrorAtPostTime"),
    ("lengths are 64-bit; the fragment size is validated",
     "dataplane/vqp/vqp_types.cc",
     [("if (c.fragment_size < kMinFragmentSize || c.fragment_size > kMaxFragmentSize) {",
       "if (false) {")],
     "GapRegressionTest.FragmentSizeDefaultAndRange"),
    ("the DQPLB sequence window: a full window is back-pressure",
     "dataplane/vqp/dqplb_protocol.cc",
     [("  if (window_.full()) return PostResult::kBlocked;  // back-pressure, not corruption\n", "")],
     "GapRegressionTest.DqplbSenderStopsAtAFullWindowWhileAQpIsHeld"),
    ("the DQPLB sequence window: only pieces that complete a receive take a number",
     "dataplane/vqp/vqp_send.cc",
     [("  const bool imm = wr.opcode == IBV_WR_RDMA_WRITE_WITH_IMM;\n  while",
       "  const bool imm = true;\n  while")],
     "GapRegressionTest.DqplbPlainWriteAndReadTakeNoSequenceNumber"),
    ("the DQPLB sequence window: a message before its receive is buffered",
     "dataplane/vqp/vqp_recv.cc",
     [("    if (!recv_.buffered.Push({imm, bytes})) {\n      ++counters_.protocol_errors;",
       "    if (true) {\n      ++counters_.protocol_errors;")],
     "GapRegressionNotesTest.MessageBeforeReceiveIsBuffered"),
    ("a SPRAY notify follows its data: fence READs on the other devices that carried it",
     "dataplane/vqp/spray_protocol.cc",
     [("const PostResult r = e.aborted ? PostResult::kPosted : PostFences(slot);",
       "const PostResult r = PostResult::kPosted;")],
     "PhysicalPathTest.ASprayNotifyIsFencedOncePerOtherDeviceThatCarriedData:"
     "GapRegressionTest.NotifyNeverOvertakesDataAcrossNics"),
    ("SEND and atomics go to the message QP",
     "dataplane/vqp/vqp_schedule.cc",
     [("  if (kind == WrKind::kMessage) {\n    const PhysQp& q",
       "  if (kind == WrKind::kMessage && false) {\n    const PhysQp& q")],
     "GapRegressionTest.SendsUseMessageQpInPostingOrder"),
    ("bounded poll: each physical CQ is polled at most once per poll",
     "dataplane/vqp/virtual_cq.cc",
     [("  if (static_cast<size_t>(n) < out.size() && pending_error_.ok()) {\n    PollPhysical();",
       "  for (int k = 0; k < 8 && static_cast<size_t>(n) < out.size() && pending_error_.ok(); ++k) {\n"
       "    PollPhysical();")],
     "PhysicalPathTest.PollTakesOneBatchPerPhysicalCqEvenWithRoomForMore"),
    ("every virtual WR completes once: completions harvested before a poll error go out first",
     "dataplane/vqp/virtual_cq.cc",
     [("  int n = TakeReady(out);\n  // Every virtual WR completes once: what was harvested before an error goes out first; the error\n"
       "  // on the following call, before anything new is polled.\n  if (n == 0 && !pending_error_.ok()) {",
       "  int n = TakeReady(out);\n  if (!pending_error_.ok()) {")],
     "GapRegressionNotesTest.PollErrorKeepsHarvestedCompletions"),
    ("an unknown completion is counted, not fatal",
     "dataplane/vqp/virtual_cq.cc",
     [("        ++unrouted_;\n", "")],
     "GapRegressionNotesTest.UnknownCompletionIsCountedNotFatal"),
    ("no allocation on the hot path",
     "dataplane/vqp/vqp_send.cc",
     [("  BRAID_RETURN_IF_ERROR(ValidateSend(wr));\n",
       "  BRAID_RETURN_IF_ERROR(ValidateSend(wr));\n  std::string trace(64, 'x');\n  (void)trace;\n")],
     "GapRegressionTest.HotPathAllocatesNothing"),
    ("a completion queue never overflows silently: a VQP that does not fit is refused",
     "dataplane/vqp/virtual_cq.cc",
     [("  if (r + entries <= cap) return Status::Ok();", "  if (true) return Status::Ok();")],
     "GapRegressionNotesTest.*Fit*"),
    ("transfers: past its deadline a transfer fails at once (and keeps its region until its WC)",
     "dataplane/engine/engine_transfers.cc",
     [("    if (!DeadlineLive(d)) continue;\n", "    if (true) continue;\n")],
     "EngineTest.PastItsDeadlineATransferFailsAtOnceAndKeepsItsRegionUntilTheWcArrives"),
    ("transfers: destroying a VQP completes each transfer of its backlog once",
     "dataplane/engine/engine_transfers.cc",
     [("    if (!transfers_.slots[index].reported) {", "    {")],
     "EngineTest.DestroyingAVqpWithABacklogBeyondItsRingCompletesEachTransferOnce"),
    ("transfers: a backlog keeps arrival order",
     "dataplane/engine/engine_transfers.cc",
     [("      const uint32_t index = backlog.front();", "      const uint32_t index = backlog.back();"),
      ("      backlog.pop_front();\n      --transfers_.backlogged;", "      backlog.pop_back();\n      --transfers_.backlogged;")],
     "EngineTest.ABacklogBeyondTheVqpsRingKeepsArrivalOrder"),
    ("soft link: a QP entering the error state lets go of its memory",
     "dataplane/soft/soft_qp.cc",
     [("  if (channel_ != nullptr) channel_->Quiesce();\n", "")],
     "TcpMemoryRelease.*"),
    ("soft link: a deregistered region's bytes are copied or cut off",
     "dataplane/soft/soft_device.cc",
     [("    device_->fabric()->ForgetMemory(device_, entry_.addr, entry_.length);\n", "")],
     "TcpMemoryRelease.*"),
    ("soft link: a responder's NAK leaves after its QP entered the error state",
     "dataplane/soft/rc_responder.cc",
     [("  EnterError();\n  Reply(PacketType::kNak, psn, nak);", "  Reply(PacketType::kNak, psn, nak);\n  EnterError();")],
     "TcpMemoryRelease.*"),
    ("soft link: a READ response is translated through the local keys when it arrives",
     "dataplane/soft/rc_requester.cc",
     [("      if (device_->mrs().CheckLocal(w.sge[s].lkey", "      if (false && device_->mrs().CheckLocal(w.sge[s].lkey")],
     "TcpMemoryRelease.*"),
    ("soft link: every transmission checks the WR's local keys",
     "dataplane/soft/rc_requester.cc",
     [("    if (!CheckLocalKeys(w)) {", "    if (!w.transmitted && !CheckLocalKeys(w)) {")],
     "TcpMemoryRelease*"),
]


def apply(path, edits):
    with open(path) as f:
        text = f.read()
    out = text
    for old, new in edits:
        if out.count(old) != 1:
            return text, None
        out = out.replace(old, new)
    return text, out


def main(argv):
    check_only = "--check" in argv
    words = [a for a in argv if not a.startswith("--")]
    chosen = [f for f in FIXES if all(w.lower() in f[0].lower() for w in words)]
    stale = []
    for name, path, edits, _ in chosen:
        _, mutated = apply(path, edits)
        if mutated is None:
            stale.append(name)
    for name in stale:
        print(f"STALE  {name}: its edit no longer applies (the code moved); update this script")
    if check_only or stale:
        print(f"{len(chosen) - len(stale)} of {len(chosen)} edits apply")
        return 1 if stale else 0
    survived = []
    for name, path, edits, tests in chosen:
        original, mutated = apply(path, edits)
        try:
            with open(path, "w") as f:
                f.write(mutated)
            built = subprocess.run(["ninja", "-C", BUILD, "braid_unit_tests"],
                                   capture_output=True, text=True)
            if built.returncode != 0:
                print(f"NOBUILD {name}\n{built.stdout[-2000:]}")
                survived.append(name)
                continue
            try:
                run = subprocess.run([BINARY, f"--gtest_filter={tests}"], capture_output=True,
                                     text=True, timeout=600)
            except subprocess.TimeoutExpired:
                print(f"FAILS  {name}\n       -> the tests hung (stopped after 600 s)", flush=True)
                continue
            failed = sorted({line.split()[3] for line in run.stdout.splitlines()
                             if line.startswith("[  FAILED  ]") and len(line.split()) > 3
                             and "." in line.split()[3]})
            ran = re.search(r"^\[==========\] [1-9]\d* tests? ", run.stdout, re.M) is not None
            if run.returncode != 0 and failed:
                print(f"FAILS  {name}\n       -> {', '.join(failed)}", flush=True)
            elif run.returncode != 0:
                print(f"FAILS  {name}\n       -> the binary exited {run.returncode} (crash)", flush=True)
            else:
                print(f"PASSES {name}  (tests: {tests}{'' if ran else '; none matched'})", flush=True)
                survived.append(name)
        finally:
            with open(path, "w") as f:
                f.write(original)
    subprocess.run(["ninja", "-C", BUILD, "braid_unit_tests"], capture_output=True)
    print(f"{len(chosen) - len(survived)} of {len(chosen)} reverted fixes fail their tests")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
