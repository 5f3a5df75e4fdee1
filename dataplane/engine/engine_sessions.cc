// The engine's local sessions: opening one, binding peer regions, taking entries from the
// submission ring, writing outcomes into the completion ring and notifications into the
// notification ring, sleeping, and ending a session.
// The protocol is doc/local_data_path.md; everything in a segment is client input.
#include <fcntl.h>
#include <sys/epoll.h>

#include <algorithm>
#include <string>

#include "dataplane/engine/engine.h"
#include "dataplane/engine/engine_internal.h"

namespace braid::engine {

using common::Result;
using common::Status;
using common::StatusCode;
using session::CompletionEntry;
using session::NotifyEntry;
using session::NotifyKind;
using session::SubmitEntry;
using session::SubmitField;

namespace {

// Bound peer regions per session (handles are 32-bit; this keeps the table small).
constexpr size_t kMaxBoundRemotes = 1u << 16;

TransferOp OpOf(session::RingOp op) {
  switch (op) {
    case session::RingOp::kRead:
      return TransferOp::kRead;
    case session::RingOp::kWriteWithImm:
      return TransferOp::kWriteWithImm;
    case session::RingOp::kWrite:
    case session::RingOp::kWatch:  // not a transfer (StartSessionWatch)
      break;
  }
  return TransferOp::kWrite;
}

Result<common::UniqueFd> Dup(int fd) {
  const int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) return Status::FromErrno(errno, "dup a session descriptor");
  return common::UniqueFd(copy);
}

}  // namespace

Result<SessionFds> Engine::OpenSession(SessionRequest request) {
  // The segment's pages are taken when it is made, charged to the agent: admitted under its
  // memory limit, and made, on this thread (reading the cgroup and taking up to 8 MiB of pages
  // take a while, and must not stall the data plane).
  BRAID_RETURN_IF_ERROR(request.rings.Check());
  const uint64_t bytes = session::SessionSegment::Layout(request.rings).total_bytes;
  BRAID_ASSIGN_OR_RETURN(
      ByteClaim memory,
      memory_.Take(bytes, "a session segment of " + std::to_string(bytes) + " bytes"));
  auto made = std::make_shared<std::unique_ptr<session::SessionSegment>>();  // copyable command
  BRAID_ASSIGN_OR_RETURN(*made, session::SessionSegment::Create(request.rings));
  memory.Release();  // its pages are taken: the cgroup counts them now
  return Call<SessionFds>(
      [request, made](Engine& e) { return e.DoOpenSession(request, std::move(*made)); });
}

Result<uint32_t> Engine::BindRemote(uint64_t session_id, uint64_t vqp_id, RemoteRegion remote,
                                    OwnerId scope) {
  return Call<uint32_t>(
      [session_id, vqp_id, remote = std::move(remote), scope](Engine& e) -> Result<uint32_t> {
        BRAID_ASSIGN_OR_RETURN(SessionSlot * s, e.FindSession(session_id, scope));
        return e.DoBindRemote(*s, vqp_id, remote);
      });
}

Result<SessionStatus> Engine::GetSession(uint64_t session_id, OwnerId scope) {
  return Call<SessionStatus>([session_id, scope](Engine& e) -> Result<SessionStatus> {
    BRAID_ASSIGN_OR_RETURN(SessionSlot * s, e.FindSession(session_id, scope));
    return e.DescribeSession(*s);
  });
}

Status Engine::CloseSession(uint64_t session_id, OwnerId scope) {
  return CallStatus([session_id, scope](Engine& e) -> Status {
    BRAID_ASSIGN_OR_RETURN(SessionSlot * s, e.FindSession(session_id, scope));
    e.EndSession(*s, "");
    std::erase(e.sessions_->open, s);
    std::erase(e.sessions_->to_wake, s);
    e.sessions_->by_id.erase(session_id);
    return Status::Ok();
  });
}

Status Engine::AdmitDescriptors(uint64_t needed, std::string what) {
  return CallStatus([needed, what = std::move(what)](Engine& e) {
    return e.fds_.budget.Admit(needed, e.fds_.promised, what);
  });
}

Result<SessionFds> Engine::DoOpenSession(const SessionRequest& request,
                                         std::unique_ptr<session::SessionSegment> segment) {
  // Three descriptors stay with the engine; the three duplicates leave with the client.
  BRAID_RETURN_IF_ERROR(fds_.budget.Admit(6, fds_.promised, "this session"));
  auto s = std::make_unique<SessionSlot>();
  s->segment = std::move(segment);
  OwnerUsage& usage = owners_[request.owner];
  const uint64_t bytes = s->segment->layout().total_bytes;
  if (usage.session_bytes + bytes > options_.max_session_bytes_per_owner) {
    return Status::NoResource(
        "this caller's sessions hold " + std::to_string(usage.session_bytes) +
        " bytes of rings, and one more of " + std::to_string(bytes) + " would pass its limit of " +
        std::to_string(options_.max_session_bytes_per_owner) +
        " (max_session_bytes_per_caller): close sessions no longer used, or ask for smaller "
        "rings");
  }
  BRAID_ASSIGN_OR_RETURN(s->submit_bell, session::Doorbell::Create());
  BRAID_ASSIGN_OR_RETURN(s->complete_bell, session::Doorbell::Create());
  s->id = sessions_->next_id++;
  s->owner = request.owner;
  s->submissions = s->segment->SubmitRing();
  s->completions = s->segment->CompletionRing();
  s->notices = s->segment->NotifyRing();
  SessionFds out;
  out.id = s->id;
  BRAID_ASSIGN_OR_RETURN(out.segment, Dup(s->segment->fd()));
  BRAID_ASSIGN_OR_RETURN(out.submit_bell, Dup(s->submit_bell.fd()));
  BRAID_ASSIGN_OR_RETURN(out.complete_bell, Dup(s->complete_bell.fd()));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = s->submit_bell.fd();
  if (epoll_ctl(loop_.epoll_fd, EPOLL_CTL_ADD, ev.data.fd, &ev) != 0) {
    return Status::FromErrno(errno, "epoll_ctl(session doorbell)");
  }
  s->ring_bytes.Take(&usage.session_bytes, bytes);
  sessions_->open.push_back(s.get());
  sessions_->by_id[s->id] = std::move(s);
  return out;
}

Result<Engine::SessionSlot*> Engine::FindSession(uint64_t session_id, OwnerId scope) {
  auto it = sessions_->by_id.find(session_id);
  if (it == sessions_->by_id.end() || (scope != kAnyOwner && it->second->owner != scope)) {
    return Status::NotFound("no session " + std::to_string(session_id) + " on agent " +
                            options_.agent_id);
  }
  return it->second.get();
}

Result<uint32_t> Engine::DoBindRemote(SessionSlot& s, uint64_t vqp_id, const RemoteRegion& remote) {
  if (!s.open) {
    return Status::FailedPrecondition("session " + std::to_string(s.id) +
                                      " has ended: open a new one");
  }
  if (s.remotes.size() >= kMaxBoundRemotes) {
    return Status::NoResource("session " + std::to_string(s.id) + " has bound " +
                              std::to_string(kMaxBoundRemotes) +
                              " remote regions, its limit: open another session");
  }
  BRAID_ASSIGN_OR_RETURN(VqpSlot * slot, FindVqp(vqp_id, s.owner));
  BRAID_RETURN_IF_ERROR(CheckCarries(*slot));
  BRAID_RETURN_IF_ERROR(CheckRemote(*slot, remote));
  Transfer holder;  // RemoteKeys takes one use of the key-table entry: the binding keeps it
  BRAID_RETURN_IF_ERROR(RemoteKeys(*slot, remote, holder).status());
  s.remotes.push_back({vqp_id, remote.addr, remote.length, holder.remote_keys});
  return static_cast<uint32_t>(s.remotes.size() - 1);
}

int Engine::PollSessions() {
  int taken = 0;
  bool ended = false;
  for (SessionSlot* s : sessions_->open) {
    // An entry is taken only when its completion has a slot: the in-flight ones own theirs.
    const uint32_t room = s->completions.Room();
    uint32_t window = room > s->in_flight ? room - s->in_flight : 0;
    while (window > 0) {
      const uint32_t want = std::min<uint32_t>(window, sessions_->batch.size());
      const uint32_t n = s->submissions.Pop({sessions_->batch.data(), want});
      for (uint32_t k = 0; k < n; ++k) StartSessionTransfer(*s, sessions_->batch[k]);
      taken += static_cast<int>(n);
      window -= n;
      if (n < want) break;
    }
    if (s->submissions.broken() || s->completions.broken() || s->notices.broken() ||
        !s->broken.empty()) {
      EndSession(*s, s->submissions.broken() ? "the client's submission tail ran past its ring"
                     : s->completions.broken()
                         ? "the client's completion head ran past what the engine wrote"
                     : s->notices.broken()
                         ? "the client's notification head ran past what the engine wrote"
                         : s->broken);
      ended = true;
    }
  }
  if (ended) std::erase_if(sessions_->open, [](const SessionSlot* s) { return !s->open; });
  return taken;
}

void Engine::StartSessionTransfer(SessionSlot& s, const SubmitEntry& e) {
  ++s.submitted;
  session::SubmitCommand c{};
  SubmitField bad = session::DecodeSubmit(e, &c);
  StatusCode code = StatusCode::kInvalidArgument;
  VqpSlot* slot = nullptr;
  RegionSlot* region = nullptr;
  BoundRemote* remote = nullptr;
  if (bad == SubmitField::kNone && c.op == session::RingOp::kWatch) {
    StartSessionWatch(s, c);
    return;
  }
  // The checks PrepareTransfer makes for a gRPC request, on facts looked up without messages (a
  // refused entry carries its code and field; Describe says what to do).
  if (bad == SubmitField::kNone) {
    VqpSlot* named = VisibleVqp(c.vqp_id, s.owner);
    if (named == nullptr) {
      bad = SubmitField::kVqp;
      code = StatusCode::kNotFound;
    } else if (!named->vqp->connected() || named->state == VqpState::kFailed) {
      bad = SubmitField::kVqp;
      code = StatusCode::kFailedPrecondition;
    } else {
      slot = named;
    }
  }
  if (bad == SubmitField::kNone) {
    auto it = regions_.by_id.find(c.local_region);
    if (it == regions_.by_id.end() || it->second->owner != slot->owner) {
      bad = SubmitField::kLocalRegion;
      code = StatusCode::kNotFound;
    } else if (!Within(c.local_offset, c.length, it->second->shm->length())) {
      bad = SubmitField::kLocalRegion;
      code = StatusCode::kOutOfRange;
    } else if (it->second->shm->cut_short()) {  // its owner cut the file short
      bad = SubmitField::kLocalRegion;
      code = StatusCode::kFailedPrecondition;
    } else {
      region = it->second.get();
    }
  }
  if (bad == SubmitField::kNone) {
    if (c.remote_region >= s.remotes.size() || s.remotes[c.remote_region].vqp_id != c.vqp_id) {
      bad = SubmitField::kRemoteRegion;
      code = StatusCode::kNotFound;
    } else if (!Within(c.remote_offset, c.length, s.remotes[c.remote_region].length)) {
      bad = SubmitField::kRemoteRegion;
      code = StatusCode::kOutOfRange;
    } else {
      remote = &s.remotes[c.remote_region];
    }
  }
  if (bad != SubmitField::kNone) {
    ++s.refused;
    CompletionEntry refusal{};
    refusal.user_data = e.user_data;
    refusal.status = static_cast<uint32_t>(code);
    refusal.detail = static_cast<uint32_t>(bad);
    WriteCompletion(s, refusal);
    return;
  }
  Result<uint32_t> acquired =
      AcquireTransfer(c.user_data, c.vqp_id, slot, OpOf(c.op), c.length, c.timeout_ms);
  if (!acquired.ok()) {
    CompletionEntry refusal{};
    refusal.user_data = e.user_data;
    refusal.status = static_cast<uint32_t>(acquired.status().code());
    WriteCompletion(s, refusal);
    return;
  }
  const uint32_t index = *acquired;
  Transfer& t = transfers_.slots[index];
  t.session = &s;
  ++s.in_flight;
  Result<uint32_t> local_keys = LocalKeys(*slot, *region);
  if (!local_keys.ok()) {
    Complete(index, local_keys.status(), IBV_WC_SUCCESS, false);
    Release(index);
    return;
  }
  RemoteKeysEntry& keys = remote->keys->second;
  ++keys.users;
  keys.last_use = ++slot->remote_uses;
  t.remote_keys = remote->keys;
  t.has_remote_keys = true;
  FillWr(t, *region, c.local_offset, *local_keys, remote->addr + c.remote_offset, keys.handle,
         c.imm);
  Admit(index);
}

void Engine::StartSessionWatch(SessionSlot& s, const session::SubmitCommand& c) {
  CompletionEntry done{};
  done.user_data = c.user_data;
  VqpSlot* slot = VisibleVqp(c.vqp_id, s.owner);
  if (slot == nullptr) {
    ++s.refused;
    done.status = static_cast<uint32_t>(StatusCode::kNotFound);
    done.detail = static_cast<uint32_t>(SubmitField::kVqp);
  } else if (std::find(s.watching.begin(), s.watching.end(), c.vqp_id) == s.watching.end()) {
    // Before any connect is fine (nothing that arrives later is missed); twice is once.
    s.watching.push_back(c.vqp_id);
    slot->session_watchers.push_back(&s);
  }
  WriteCompletion(s, done);
}

bool Engine::Notify(SessionSlot& s, const NotifyEntry& n) {
  const uint32_t room = s.open ? s.notices.Room() : 0;
  if (room == 0) {  // ended, or a broken ring (the loop ends the session)
    EndWatches(s);
    return false;
  }
  if (room == 1) {
    NotifyEntry behind{};
    behind.kind = static_cast<uint8_t>(NotifyKind::kWatchEnded);
    behind.status = static_cast<uint16_t>(StatusCode::kNoResource);
    (void)s.notices.Push({&behind, 1});
    MarkToWake(s);
    EndWatches(s);
    return false;
  }
  (void)s.notices.Push({&n, 1});
  MarkToWake(s);
  return true;
}

void Engine::EndWatches(SessionSlot& s) {
  for (uint64_t vqp_id : s.watching) {
    auto it = vqps_.find(vqp_id);
    if (it != vqps_.end()) std::erase(it->second->session_watchers, &s);
  }
  s.watching.clear();
}

void Engine::MarkToWake(SessionSlot& s) {
  if (!s.on_wake_list) {
    s.on_wake_list = true;
    sessions_->to_wake.push_back(&s);
  }
}

void Engine::WriteCompletion(SessionSlot& s, const CompletionEntry& c) {
  if (!s.open) return;  // the session ended: its outcomes go nowhere
  if (s.completions.Push({&c, 1}) != 1) {
    // The window guarantees a slot; only a client that moved its head backwards takes it away.
    if (s.broken.empty()) s.broken = "the client's completion ring had no slot the window owed";
    return;
  }
  ++s.completed;
  MarkToWake(s);
}

void Engine::WakeSessions() {
  for (SessionSlot* s : sessions_->to_wake) {
    s->on_wake_list = false;
    if (s->open && s->completions.ConsumerSleeps()) s->complete_bell.Ring();
  }
  sessions_->to_wake.clear();
}

bool Engine::SessionsMaySleep() {
  for (SessionSlot* s : sessions_->open) {
    // Entries waiting behind a full window do not keep the engine awake: the client rings once
    // it has reaped (doc/local_data_path.md, "Sleeping").
    const uint32_t room = s->completions.Room();
    if (!s->submissions.PrepareToSleep() && room > s->in_flight) {
      SessionsAwake();
      return false;
    }
  }
  return true;
}

void Engine::SessionsAwake() {
  for (SessionSlot* s : sessions_->open) s->submissions.Awake();
}

void Engine::EndSession(SessionSlot& s, std::string why) {
  if (!s.open) return;
  s.open = false;
  // Outcomes still owed complete into nothing; a posted WR's region stays referenced until its
  // real completion (Release), and a backlog entry is let go without being posted.
  for (uint32_t i = 0; i < transfers_.slots.size(); ++i) {
    Transfer& t = transfers_.slots[i];
    if (t.active && t.session == &s && !t.reported) {
      Complete(i, Status::Cancelled("the session ended"), IBV_WC_WR_FLUSH_ERR, false);
    }
  }
  if (s.broken.empty()) s.broken = std::move(why);
  EndWatches(s);
  for (const BoundRemote& b : s.remotes) {
    if (vqps_.find(b.vqp_id) != vqps_.end()) --b.keys->second.users;
  }
  s.remotes.clear();
  (void)epoll_ctl(loop_.epoll_fd, EPOLL_CTL_DEL, s.submit_bell.fd(), nullptr);
  // The caller takes it off sessions_->open (the loop may be walking that list).
}

SessionStatus Engine::DescribeSession(const SessionSlot& s) const {
  SessionStatus out;
  out.id = s.id;
  out.owner = s.owner;
  out.submitted = s.submitted;
  out.refused = s.refused;
  out.completed = s.completed;
  out.in_flight = s.in_flight;
  out.bound_remotes = static_cast<uint32_t>(s.remotes.size());
  out.broken = s.broken;
  return out;
}

}  // namespace braid::engine
