// libFuzzer target: what the engine reads from a session's submission ring, all of it written by
// an untrusted client. The input is the ring as the client left it: the first 4 bytes are the
// client's tail, the next one the engine's batch size, the rest the 16 entries. The engine's
// consumer pops what the tail claims, in batches, and decodes every entry: it may never take more
// than the ring holds, and a popped entry is either a command or a refusal naming a field.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "dataplane/session/ring_entry.h"
#include "dataplane/session/spsc_ring.h"

using braid::session::RingControl;
using braid::session::SpscRing;
using braid::session::SubmitCommand;
using braid::session::SubmitEntry;
using braid::session::SubmitField;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  constexpr uint32_t kEntries = 16;
  if (size < 5) return 0;
  uint32_t tail = 0;
  std::memcpy(&tail, data, 4);
  const size_t batch = 1 + data[4] % kEntries;
  RingControl control;
  SubmitEntry entries[kEntries] = {};
  std::memcpy(entries, data + 5, std::min(size - 5, sizeof(entries)));
  SpscRing<SubmitEntry> ring(&control, entries, kEntries);
  control.tail.value.store(tail);
  SubmitEntry out[kEntries] = {};
  uint32_t popped = 0;
  for (int round = 0; round < 20; ++round) popped += ring.Pop(std::span(out, batch));
  if (popped > kEntries) __builtin_trap();  // more than the ring holds
  for (uint32_t i = 0; i < std::min(popped, kEntries); ++i) {
    SubmitCommand c;
    const SubmitField f = DecodeSubmit(out[i], &c);
    if (braid::session::Describe(f).empty()) __builtin_trap();
  }
  return 0;
}
