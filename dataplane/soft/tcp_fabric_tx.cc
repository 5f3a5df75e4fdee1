// TcpFabric, sending: a QP's frames are queued on its channel; the connection sends the rest of a
// segment that went out in part, then control segments, then one data segment from each QP with
// frames, in turn, many per sendmsg, payloads gathered from where they lie.
#include <sys/epoll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "dataplane/common/fault_guard.h"
#include "dataplane/soft/soft_device.h"
#include "dataplane/soft/soft_qp.h"
#include "dataplane/soft/tcp_fabric.h"
#include "dataplane/soft/tcp_fabric_internal.h"

namespace braid::soft {

namespace {

constexpr size_t kMaxFlushIov = 128;       // iovecs gathered into one sendmsg
constexpr size_t kMaxFlushSegments = 32;   // data segments in one sendmsg
constexpr uint64_t kFlushBytes = 1 << 20;  // bytes planned for one sendmsg
constexpr size_t kHeader = wire::kSegmentHeaderBytes;
// A QP's requests posted behind outstanding ones wait for the end of the next pass while its
// queue holds less than this: small operations leave many per sendmsg, bulk ones at once.
constexpr uint64_t kHeldRequestBytes = 64 << 10;

}  // namespace

void TcpFabric::TcpChannel::Transmit(const PacketHeader& header, std::span<const iovec> payload) {
  if (dead_ || drop_next_ > 0) {
    // The pair is over (or a test drops this frame): the peer never sees it.
    if (drop_next_ > 0) --drop_next_;
    ++fabric_->stats_.frames_dropped;
    return;
  }
  Enqueue(header, payload);
  held_in_ = UINT64_MAX;  // an ACK this channel held back leaves with this frame
  // Within a progress pass (answers to what the pass read, retransmissions) frames wait for the
  // end of the pass, which flushes every connection with output: the answers to a batch of
  // requests leave in one sendmsg, not one each. So do a post batch's requests, at its end.
  // (Enqueue activated the channel: its connection is among those a flush of pending ones sends.)
  if (Sendable() && !fabric_->in_pass_ && fabric_->batch_depth_ == 0) fabric_->Flush(*conn_);
}

void TcpFabric::TcpChannel::TransmitBehind(const PacketHeader& header,
                                           std::span<const iovec> payload) {
  if (dead_ || drop_next_ > 0 || queued_ + header.payload_len >= kHeldRequestBytes) {
    Transmit(header, payload);
    return;
  }
  Enqueue(header, payload);
  held_in_ = UINT64_MAX;  // an ACK this channel held back leaves with this frame
  ++fabric_->stats_.requests_held;
}

void TcpFabric::TcpChannel::TransmitAck(const PacketHeader& header) {
  if (!fabric_->in_pass_ || dead_ || drop_next_ > 0) {
    Transmit(header, {});
    return;
  }
  Enqueue(header, {});
  if (held_in_ != fabric_->ack_hold_) {  // not already waiting: the hold's end bounds this wait
    held_in_ = fabric_->ack_hold_;
    fabric_->ack_hold_ends_ns_ =
        std::min(fabric_->ack_hold_ends_ns_, fabric_->NowNs() + fabric_->options_.ack_delay_ns);
  }
  ++fabric_->stats_.acks_deferred;
}

void TcpFabric::TcpChannel::Enqueue(const PacketHeader& header, std::span<const iovec> payload) {
  TxItem& t = txq_.emplace_back();
  wire::EncodeFrameHeader(header, &t.header);
  for (const iovec& v : payload) {
    if (t.iovcnt < t.iov.size() && v.iov_len > 0) t.iov[t.iovcnt++] = v;
  }
  t.total = wire::kFrameHeaderBytes + header.payload_len;
  if (header.type == PacketType::kRequest) {
    t.resent = PsnDiff(header.psn, fresh_psn_) < 0;
    if (!t.resent) fresh_psn_ = PsnNext(header.psn);
  }
  queued_ += t.total;
  fabric_->Activate(*this);
}

uint64_t TcpFabric::TcpChannel::Gather(Cursor* at, uint64_t len, iovec* iov, size_t room,
                                       size_t* used, size_t* frame_starts) const {
  uint64_t covered = 0;
  size_t n = 0;
  for (; at->item < txq_.size() && covered < len && n < room; ++at->item, at->offset = 0) {
    const TxItem& t = txq_[at->item];
    uint64_t pos = t.sent + at->offset;  // within the frame: header bytes, then payload ranges
    if (pos == 0 && frame_starts != nullptr) ++*frame_starts;
    uint64_t start = 0;
    for (uint32_t r = 0; r <= t.iovcnt && covered < len && n < room; ++r) {
      uint8_t* base = r == 0 ? const_cast<uint8_t*>(t.header.data())
                             : static_cast<uint8_t*>(t.iov[r - 1].iov_base);
      const uint64_t size = r == 0 ? wire::kFrameHeaderBytes : t.iov[r - 1].iov_len;
      const uint64_t end = start + size;
      if (pos < end) {
        const uint64_t take = std::min(end - pos, len - covered);
        iov[n++] = {base + (pos - start), take};
        covered += take;
        pos += take;
      }
      start = end;
    }
    if (pos < t.total) {  // stopped inside this frame
      at->offset = pos - t.sent;
      break;
    }
  }
  *used = n;
  return covered;
}

void TcpFabric::QueueControl(Conn& c, const wire::Segment& segment, std::span<const uint8_t> body) {
  wire::SegmentHeaderBytes header;
  wire::EncodeSegmentHeader(segment, &header);
  c.ctl.insert(c.ctl.end(), header.begin(), header.end());
  c.ctl.insert(c.ctl.end(), body.begin(), body.end());
  MarkPending(c);
}

void TcpFabric::Activate(TcpChannel& ch) {
  if (ch.active_ || !ch.Sendable() || ch.queued_ == 0) return;
  ch.active_ = true;
  ch.conn_->active.push_back(&ch);
  MarkPending(*ch.conn_);
}

void TcpFabric::TcpChannel::TxItem::Own() {
  if (!copy.empty() || iovcnt == 0) return;
  size_t bytes = 0;
  for (uint32_t i = 0; i < iovcnt; ++i) bytes += iov[i].iov_len;
  copy.resize(bytes);
  size_t off = 0;
  for (uint32_t i = 0; i < iovcnt; ++i) {
    std::memcpy(copy.data() + off, iov[i].iov_base, iov[i].iov_len);
    off += iov[i].iov_len;
  }
  iov[0] = {copy.data(), bytes};
  iovcnt = 1;
}

bool TcpFabric::TcpChannel::TxItem::Refers(uint64_t addr, uint64_t length) const {
  if (!copy.empty()) return false;
  for (uint32_t i = 0; i < iovcnt; ++i) {
    const auto base = reinterpret_cast<uint64_t>(iov[i].iov_base);
    if (base < addr + length && addr < base + iov[i].iov_len) return true;
  }
  return false;
}

// The QP entered the error state: nothing of its memory is read or written from now on.
void TcpFabric::Quiesce(TcpChannel& ch) {
  // An inbound payload being placed: the rest is discarded (EndInbound finds the QP in error).
  ch.rx_place_.count = 0;
  ch.rx_index_ = 0;
  ch.rx_offset_ = 0;
  // Frames the peer has begun to receive (in part in the socket, or in the segment going out)
  // must arrive whole, or the peer would read what follows as their rest: they keep a copy. The
  // others are dropped, as an HCA sends nothing more for a QP in error.
  Conn* c = ch.conn_;
  uint64_t committed =
      c != nullptr && c->cur.active && c->cur.channel == &ch ? c->cur.body_left : 0;
  size_t keep = 0;
  uint64_t queued = 0;
  for (; keep < ch.txq_.size(); ++keep) {
    TcpChannel::TxItem& t = ch.txq_[keep];
    if (t.sent == 0 && committed == 0) break;
    t.Own();
    const uint64_t unsent = t.total - t.sent;
    committed -= std::min(committed, unsent);
    queued += unsent;
  }
  stats_.frames_quiesced += ch.txq_.size() - keep;
  ch.txq_.resize(keep);
  ch.queued_ = queued;
  ch.planned_ = 0;
  ch.plan_end_ = {};
  ch.held_in_ = UINT64_MAX;
}

void TcpFabric::ForgetMemory(SoftDevice* device, uint64_t addr, uint64_t length) {
  if (length == 0) return;
  auto it = channels_.lower_bound({device, 0});
  for (; it != channels_.end() && it->first.first == device; ++it) {
    TcpChannel& ch = *it->second;
    for (TcpChannel::TxItem& t : ch.txq_) {
      if (!t.Refers(addr, length)) continue;
      t.Own();  // read now, while the memory is still there
      ++stats_.frames_copied;
    }
    if (!ch.rx_in_payload_) continue;
    bool cut = false;
    for (uint32_t i = ch.rx_index_; i < ch.rx_place_.count; ++i) {
      const auto base = reinterpret_cast<uint64_t>(ch.rx_place_.iov[i].iov_base);
      cut = cut || (base < addr + length && addr < base + ch.rx_place_.iov[i].iov_len);
    }
    if (!cut) continue;
    ch.rx_place_.count = 0;
    ch.rx_index_ = 0;
    ch.rx_offset_ = 0;
    ++stats_.payloads_cut;
    if (SoftQp* qp = device->FindQp(ch.local_qpn_)) qp->CutInbound();
  }
}

// `bytes` of `ch`'s queue were taken by the socket. That shows the link moves when the socket had
// been full (`drained`: the peer's acknowledgements made the room) or when they hold a frame sent
// for the first time; a socket with room takes a retry's retransmission from a peer that is gone.
void TcpFabric::Advance(TcpChannel& ch, size_t bytes, bool drained) {
  if (bytes == 0) return;
  ch.queued_ -= bytes;
  bool moved = drained;
  while (bytes > 0 && !ch.txq_.empty()) {
    TcpChannel::TxItem& t = ch.txq_.front();
    const size_t take = std::min(bytes, t.total - t.sent);
    moved = moved || !t.resent;
    t.sent += take;
    bytes -= take;
    if (t.sent == t.total) ch.txq_.pop_front();
  }
  if (moved) ch.last_progress_ns_ = NowNs();
  if (ch.txq_.empty()) ch.held_in_ = UINT64_MAX;
}

// `ch` leaves while its segment is going out: the rest of the segment is copied (at most one
// segment), so the stream stays whole; the peer drops it with the pair.
void TcpFabric::Orphan(Conn& c, TcpChannel& ch) {
  c.orphan.resize(c.cur.body_left);
  c.orphan_sent = 0;
  uint64_t copied = 0;
  TcpChannel::Cursor at;
  while (copied < c.cur.body_left) {
    std::array<iovec, 64> iov;
    size_t used = 0;
    const uint64_t got =
        ch.Gather(&at, c.cur.body_left - copied, iov.data(), iov.size(), &used, nullptr);
    for (size_t i = 0; i < used; ++i) {
      std::memcpy(c.orphan.data() + copied, iov[i].iov_base, iov[i].iov_len);
      copied += iov[i].iov_len;
    }
    if (got == 0) break;
  }
  c.cur.channel = nullptr;
  ++stats_.segments_orphaned;
}

void TcpFabric::Flush(Conn& c) {
  if (c.dead || c.connecting || !c.has_challenge) return;
  for (;;) {
    std::array<iovec, kMaxFlushIov> iov;
    size_t cnt = 0;
    uint64_t bytes = 0;
    size_t frames = 0;
    bool limited = false;  // stopped by the limits of one sendmsg: there may be more
    // The rest of a segment that went out in part.
    TcpChannel* cur_channel = c.cur.active ? c.cur.channel : nullptr;
    uint64_t cur_bytes = 0;
    if (c.cur.active) {
      if (c.cur.header_sent < kHeader) {
        iov[cnt++] = {c.cur.header.data() + c.cur.header_sent, kHeader - c.cur.header_sent};
        cur_bytes += kHeader - c.cur.header_sent;
      }
      if (c.cur.body_left > 0 && cur_channel != nullptr) {
        size_t used = 0;
        cur_channel->plan_end_ = {};
        const uint64_t got = cur_channel->Gather(&cur_channel->plan_end_, c.cur.body_left,
                                                 &iov[cnt], iov.size() - cnt, &used, &frames);
        cnt += used;
        cur_bytes += got;
        cur_channel->planned_ = c.cur.body_left;
        limited = got < c.cur.body_left;  // nothing may follow a segment not wholly included
      } else if (c.cur.body_left > 0) {
        iov[cnt++] = {c.orphan.data() + c.orphan_sent, c.cur.body_left};
        cur_bytes += c.cur.body_left;
      }
      bytes += cur_bytes;
    }
    // Control segments.
    uint64_t ctl_bytes = 0;
    if (!limited && c.ctl_sent < c.ctl.size()) {
      ctl_bytes = c.ctl.size() - c.ctl_sent;
      iov[cnt++] = {c.ctl.data() + c.ctl_sent, ctl_bytes};
      bytes += ctl_bytes;
    }
    // Data segments: the active QPs take turns.
    struct Planned {
      TcpChannel* channel;
      uint32_t len;
    };
    std::array<Planned, kMaxFlushSegments> plan;
    std::array<wire::SegmentHeaderBytes, kMaxFlushSegments> headers;
    size_t planned = 0;
    for (bool any = true; any && !limited;) {
      any = false;
      for (size_t k = 0, m = c.active.size(); k < m && !limited; ++k) {
        if (c.turn >= c.active.size()) c.turn = 0;
        if (c.active.empty()) break;
        TcpChannel& ch = *c.active[c.turn];
        const uint64_t avail = ch.queued_ - ch.planned_;
        if (!ch.Sendable() || (avail == 0 && ch.planned_ == 0)) {  // it leaves the round
          ch.active_ = false;
          c.active.erase(c.active.begin() + static_cast<ptrdiff_t>(c.turn));
          continue;
        }
        // An ACK held back (TransmitAck) waits unless this sendmsg goes anyway: then it rides
        // (a round that plans something is followed by another, which takes it).
        if (avail == 0 || (ch.held_in_ == ack_hold_ && cnt == 0)) {
          ++c.turn;
          continue;
        }
        if (cnt + 2 > iov.size() || bytes >= kFlushBytes || planned == plan.size()) {
          limited = true;
          break;
        }
        if (ch.planned_ == 0) ch.plan_end_ = {};
        const size_t header_slot = cnt++;
        size_t used = 0;
        const uint64_t len =
            ch.Gather(&ch.plan_end_, std::min<uint64_t>(avail, wire::kMaxSegmentBytes), &iov[cnt],
                      iov.size() - cnt, &used, &frames);
        cnt += used;
        wire::EncodeSegmentHeader({wire::SegmentType::kData, wire::DetachReason::kClosed,
                                   ch.remote_qpn_, ch.local_qpn_, static_cast<uint32_t>(len)},
                                  &headers[planned]);
        iov[header_slot] = {headers[planned].data(), kHeader};
        plan[planned++] = {&ch, static_cast<uint32_t>(len)};
        ch.planned_ += len;
        bytes += kHeader + len;
        any = true;
        ++c.turn;
      }
    }
    if (cur_channel != nullptr) cur_channel->planned_ = 0;
    for (size_t i = 0; i < planned; ++i) plan[i].channel->planned_ = 0;
    if (cnt == 0) {
      WatchWritable(c, false);
      return;
    }
    msghdr msg{};
    msg.msg_iov = iov.data();
    msg.msg_iovlen = cnt;
    const bool drained = c.want_out;  // found full before: its room is the peer's doing
    ssize_t n = sendmsg(c.fd, &msg, MSG_NOSIGNAL);
    // A client cut its file short under a region: once the range is replaced, send again.
    if (n < 0 && errno == EFAULT && common::FaultGuard::Repair(iov.data(), cnt)) {
      n = sendmsg(c.fd, &msg, MSG_NOSIGNAL);
    }
    if (n < 0) {
      SendFailed(c);
      return;
    }
    if (frames > 1) stats_.frames_joined += frames - 1;
    size_t left = static_cast<size_t>(n);
    if (c.cur.active) {
      const size_t h = std::min(left, kHeader - c.cur.header_sent);
      c.cur.header_sent += h;
      left -= h;
      const size_t b = std::min<size_t>(left, c.cur.body_left);
      if (cur_channel != nullptr) {
        Advance(*cur_channel, b, drained);
      } else {
        c.orphan_sent += b;
      }
      c.cur.body_left -= static_cast<uint32_t>(b);
      left -= b;
      if (c.cur.header_sent == kHeader && c.cur.body_left == 0) {
        c.cur.active = false;
        c.orphan.clear();
        c.orphan_sent = 0;
      }
    }
    if (ctl_bytes > 0) {
      const size_t k = std::min<size_t>(left, ctl_bytes);
      c.ctl_sent += k;
      left -= k;
      if (c.ctl_sent == c.ctl.size()) {
        c.ctl.clear();
        c.ctl_sent = 0;
      }
    }
    for (size_t i = 0; i < planned && left > 0; ++i) {
      const size_t h = std::min(left, kHeader);
      left -= h;
      const size_t b = std::min<size_t>(left, plan[i].len);
      left -= b;
      Advance(*plan[i].channel, b, drained);
      if (h < kHeader || b < plan[i].len) {  // this segment went out in part: it goes on first
        c.cur.active = true;
        c.cur.header = headers[i];
        c.cur.header_sent = h;
        c.cur.channel = plan[i].channel;
        c.cur.body_left = plan[i].len - static_cast<uint32_t>(b);
      }
    }
    if (static_cast<uint64_t>(n) < bytes) {  // the socket is full: the rest when it has room
      WatchWritable(c, true);
      return;
    }
    if (!limited) {
      WatchWritable(c, false);
      return;
    }
  }
}

// A send that failed: a full socket waits for room (EPOLLOUT); anything else kills the connection.
void TcpFabric::SendFailed(Conn& c) {
  if (errno == EAGAIN || errno == EINTR) {
    WatchWritable(c, true);
  } else {
    Kill(c);
  }
}

// While segments wait for room in the socket, EPOLLOUT makes the fabric's epoll fd (wait_fd)
// readable when room appears, so a caller sleeping on it wakes to send them.
void TcpFabric::WatchWritable(Conn& c, bool on) {
  if (c.want_out == on || c.dead || c.connecting) return;
  c.want_out = on;
  epoll_event ev{};
  ev.events = EPOLLIN | (on ? EPOLLOUT : 0u);
  ev.data.u64 = reinterpret_cast<uint64_t>(&c);
  epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev);
}

void TcpFabric::EndBatch() {
  if (batch_depth_ > 0 && --batch_depth_ == 0 && !in_pass_) FlushPending();
}

void TcpFabric::MarkPending(Conn& c) {
  if (c.pending_tx) return;
  c.pending_tx = true;
  pending_tx_.push_back(&c);
}

}  // namespace braid::soft
