// TcpFabric, receiving: bytes are read many at a time into the connection's buffer and parsed
// into segments; a data segment's bytes continue its QP's frame (header, then payload into the
// placement the QP chose). A bulk payload, when the buffer is empty, is read straight into its
// placement, with the headers after it landing in the buffer.
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "dataplane/common/fault_guard.h"
#include "dataplane/soft/soft_device.h"
#include "dataplane/soft/tcp_fabric.h"
#include "dataplane/soft/tcp_fabric_internal.h"

namespace braid::soft {

namespace {

// A payload with at least this much left in its segment is read straight into its placement.
constexpr uint64_t kDirectBytes = 8 << 10;

}  // namespace

void TcpFabric::TcpChannel::TakePayload(const uint8_t* src, size_t n) {
  rx_left_ -= n;
  while (n > 0 && rx_index_ < rx_place_.count) {
    const iovec& v = rx_place_.iov[rx_index_];
    const size_t take = std::min(v.iov_len - rx_offset_, n);
    if (src != nullptr) {
      std::memcpy(static_cast<uint8_t*>(v.iov_base) + rx_offset_, src, take);
      src += take;
    }
    rx_offset_ += take;
    n -= take;
    if (rx_offset_ == v.iov_len) {
      ++rx_index_;
      rx_offset_ = 0;
    }
  }
}

size_t TcpFabric::TcpChannel::PayloadIov(uint64_t len, iovec* iov, size_t room,
                                         std::span<uint8_t> discard) const {
  size_t cnt = 0;
  for (uint32_t i = rx_index_; i < rx_place_.count && len > 0 && cnt < room; ++i) {
    const size_t skip = i == rx_index_ ? rx_offset_ : 0;
    const size_t take = std::min<uint64_t>(rx_place_.iov[i].iov_len - skip, len);
    if (take == 0) continue;
    iov[cnt++] = {static_cast<uint8_t*>(rx_place_.iov[i].iov_base) + skip, take};
    len -= take;
  }
  if (len > 0 && cnt < room && rx_index_ >= rx_place_.count) {
    iov[cnt++] = {discard.data(), std::min<uint64_t>(discard.size(), len)};
  }
  return cnt;
}

// Reads the callee's challenge on a connection we made; then our QPs' attaches can go. False:
// wait (incomplete) or refused.
bool TcpFabric::ReadChallenge(Conn& c) {
  while (c.challenge_have < wire::kChallengeBytes) {
    const ssize_t n =
        read(c.fd, c.rx.data() + c.challenge_have, wire::kChallengeBytes - c.challenge_have);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
      Kill(c);
      return false;
    }
    if (n < 0) return false;
    c.challenge_have += static_cast<size_t>(n);
  }
  if (wire::DecodeChallenge({c.rx.data(), wire::kChallengeBytes}, &c.challenge) !=
      wire::DecodeError::kOk) {
    ++stats_.frames_refused;
    Kill(c);
    return false;
  }
  c.has_challenge = true;
  std::vector<TcpChannel*> waiting;
  for (auto& [qpn, ch] : c.channels) waiting.push_back(ch);
  for (TcpChannel* ch : waiting) {
    if (!c.dead) SendAttach(c, *ch);
  }
  return !c.dead;
}

// `n` bytes of `ch`'s frames: the frame header (checked: it must be from the peer QP to ours),
// then the payload. False: the connection was closed.
bool TcpFabric::Feed(Conn& c, TcpChannel& ch, const uint8_t* bytes, size_t n) {
  while (n > 0) {
    if (!ch.rx_in_payload_) {
      const size_t take = std::min(n, wire::kFrameHeaderBytes - ch.rx_header_have_);
      std::memcpy(ch.rx_header_bytes_.data() + ch.rx_header_have_, bytes, take);
      ch.rx_header_have_ += take;
      bytes += take;
      n -= take;
      if (ch.rx_header_have_ < wire::kFrameHeaderBytes) return true;
      ch.rx_header_have_ = 0;
      if (wire::DecodeFrameHeader(ch.rx_header_bytes_, &ch.rx_header_) != wire::DecodeError::kOk ||
          ch.rx_header_.dst_qpn != ch.local_qpn_ || ch.rx_header_.src_qpn != ch.remote_qpn_) {
        ++stats_.frames_refused;
        Kill(c);
        return false;
      }
      ch.rx_place_ = c.device->BeginInbound(ch.rx_header_);
      ch.rx_left_ = ch.rx_header_.payload_len;
      if (ch.rx_left_ > 0) c.bulk = ch.rx_left_ >= kDirectBytes;
      ch.rx_index_ = 0;
      ch.rx_offset_ = 0;
      if (ch.rx_left_ == 0) {
        c.device->EndInbound(ch.rx_header_);
        if (c.dead) return false;
        continue;
      }
      ch.rx_in_payload_ = true;
      continue;
    }
    const size_t take = std::min<uint64_t>(n, ch.rx_left_);
    ch.TakePayload(bytes, take);
    stats_.payload_bytes_buffered += take;
    bytes += take;
    n -= take;
    if (ch.rx_left_ == 0) {
      ch.rx_in_payload_ = false;
      c.device->EndInbound(ch.rx_header_);  // after placement: completions, then the ACK
      if (c.dead) return false;
    }
  }
  return true;
}

// Parses what is buffered: segment headers, control segments whole, data segments' bytes into
// their QPs. False: the connection was closed.
bool TcpFabric::Parse(Conn& c) {
  for (;;) {
    const size_t avail = c.rx_end - c.rx_pos;
    if (c.seg_left == 0) {
      if (avail < wire::kSegmentHeaderBytes) return true;
      const std::span<const uint8_t> at(c.rx.data() + c.rx_pos, avail);
      wire::Segment seg;
      if (wire::DecodeSegmentHeader(at, &seg) != wire::DecodeError::kOk) {
        ++stats_.frames_refused;
        Kill(c);
        return false;
      }
      if (seg.type != wire::SegmentType::kData) {
        if (avail < wire::kSegmentHeaderBytes + seg.length) return true;  // the body is small
        c.rx_pos += wire::kSegmentHeaderBytes + seg.length;
        OnControl(c, seg, at.subspan(wire::kSegmentHeaderBytes, seg.length));
        if (c.dead) return false;
        continue;
      }
      c.rx_pos += wire::kSegmentHeaderBytes;
      c.seg = seg;
      c.seg_left = seg.length;
      auto it = c.channels.find(seg.dst_qpn);
      c.seg_channel =
          it != c.channels.end() && it->second->attached_ && it->second->remote_qpn_ == seg.src_qpn
              ? it->second
              : nullptr;
      if (c.seg_channel == nullptr) {
        ++stats_.segments_unrouted;  // its QP left; the peer learns it from our detach
      } else {
        c.seg_channel->last_progress_ns_ = NowNs();
      }
      continue;
    }
    if (avail == 0) return true;
    const size_t n = std::min<size_t>(avail, c.seg_left);
    const uint8_t* bytes = c.rx.data() + c.rx_pos;
    c.rx_pos += n;
    c.seg_left -= static_cast<uint32_t>(n);
    if (c.seg_channel != nullptr && !Feed(c, *c.seg_channel, bytes, n)) return false;
  }
}

// The buffer is empty and a bulk payload is due: read it straight into its placement, and the
// headers that follow it into the buffer. False: not due; else `*result` is readv's, of `*asked`.
bool TcpFabric::ReadDirect(Conn& c, ssize_t* result, size_t* asked) {
  TcpChannel* ch = c.seg_channel;
  if (c.rx_pos != c.rx_end || c.seg_left == 0 || ch == nullptr || !ch->rx_in_payload_) {
    return false;
  }
  const uint64_t len = std::min<uint64_t>(c.seg_left, ch->rx_left_);
  if (len < kDirectBytes) return false;
  std::array<iovec, Placement::kMaxRanges + 2> iov;
  size_t cnt = ch->PayloadIov(len, iov.data(), iov.size() - 1, discard_);
  uint64_t direct = 0;
  for (size_t i = 0; i < cnt; ++i) direct += iov[i].iov_len;
  c.rx_pos = c.rx_end = 0;
  // Behind the payload, only the next headers (a segment's and a frame's): the payload after them
  // is read straight into place too, not copied from the buffer.
  if (direct == len) {
    iov[cnt++] = {c.rx.data(), wire::kSegmentHeaderBytes + wire::kFrameHeaderBytes};
  }
  *asked = 0;
  for (size_t i = 0; i < cnt; ++i) *asked += iov[i].iov_len;
  ssize_t n = readv(c.fd, iov.data(), static_cast<int>(cnt));
  // A client cut its file short under a region: once the range is replaced, read again.
  if (n < 0 && errno == EFAULT && common::FaultGuard::Repair(iov.data(), cnt)) {
    n = readv(c.fd, iov.data(), static_cast<int>(cnt));
  }
  *result = n;
  if (n <= 0) return true;
  const size_t placed = std::min<size_t>(static_cast<size_t>(n), direct);
  ch->TakePayload(nullptr, placed);
  stats_.payload_bytes_placed += placed;
  c.seg_left -= static_cast<uint32_t>(placed);
  ch->last_progress_ns_ = NowNs();
  c.rx_end = static_cast<size_t>(n) - placed;
  if (ch->rx_left_ == 0) {
    ch->rx_in_payload_ = false;
    c.device->EndInbound(ch->rx_header_);
  }
  return true;
}

void TcpFabric::OnReadable(Conn& c) {
  if (c.dead) return;
  if (c.outbound && !c.has_challenge && !ReadChallenge(c)) return;
  size_t budget = options_.max_bytes_per_progress;
  for (int reads = 0; reads < options_.max_frames_per_progress && budget > 0; ++reads) {
    if (!Parse(c)) return;
    ssize_t n = 0;
    size_t asked = 0;
    if (!ReadDirect(c, &n, &asked)) {
      if (c.rx.size() < kRxBufferBytes && !c.channels.empty()) c.rx.resize(kRxBufferBytes);
      if (c.rx_pos > 0) {  // keep the unparsed rest (less than a header) at the front
        std::memmove(c.rx.data(), c.rx.data() + c.rx_pos, c.rx_end - c.rx_pos);
        c.rx_end -= c.rx_pos;
        c.rx_pos = 0;
      }
      asked = c.rx.size() - c.rx_end;
      const size_t upto = c.seg_left + wire::kSegmentHeaderBytes + wire::kFrameHeaderBytes;
      if (c.bulk && upto > c.rx_end) asked = std::min(asked, upto - c.rx_end);
      n = read(c.fd, c.rx.data() + c.rx_end, asked);
      if (n > 0) c.rx_end += static_cast<size_t>(n);
    }
    if (c.dead) return;
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
      if (c.seg_left > 0 || c.rx_end > c.rx_pos) ++stats_.frames_refused;  // truncated
      Kill(c);
      return;
    }
    if (n < 0) break;
    budget -= std::min(budget, static_cast<size_t>(n));
    // A short read emptied the socket: no read to hear EAGAIN (epoll is level-triggered, so
    // bytes that arrive meanwhile are found by the next pass).
    if (static_cast<size_t>(n) < asked) break;
  }
  Parse(c);
}

}  // namespace braid::soft
