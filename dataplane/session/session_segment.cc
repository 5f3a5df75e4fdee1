#include "dataplane/session/session_segment.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <string>

namespace braid::session {

using common::Status;

namespace {

uint64_t Align64(uint64_t n) { return (n + 63) & ~uint64_t{63}; }

bool RingSizeOk(uint32_t n) { return n >= 2 && n <= kMaxRingEntries && std::has_single_bit(n); }

Status Errno(const char* what) {
  return Status::IoError(std::string(what) + ": " + std::strerror(errno));
}

constexpr unsigned int kSizeSeals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;

}  // namespace

bool RingSizes::Valid() const { return RingSizeOk(sq) && RingSizeOk(cq) && RingSizeOk(nq); }

Status RingSizes::Check() const {
  return Valid() ? Status::Ok()
                 : Status::InvalidArgument("ring sizes must be powers of two from 2 to 65536");
}

SegmentHeader SessionSegment::Layout(const RingSizes& sizes) {
  SegmentHeader h{};
  h.magic = kSegmentMagic;
  h.version = kSessionVersion;
  h.header_bytes = sizeof(SegmentHeader);
  h.sq_entries = sizes.sq;
  h.cq_entries = sizes.cq;
  h.nq_entries = sizes.nq;
  h.sq_control = Align64(sizeof(SegmentHeader));
  h.sq_ring = h.sq_control + sizeof(RingControl);
  h.cq_control = Align64(h.sq_ring + uint64_t{sizes.sq} * sizeof(SubmitEntry));
  h.cq_ring = h.cq_control + sizeof(RingControl);
  h.nq_control = Align64(h.cq_ring + uint64_t{sizes.cq} * sizeof(CompletionEntry));
  h.nq_ring = h.nq_control + sizeof(RingControl);
  h.total_bytes = Align64(h.nq_ring + uint64_t{sizes.nq} * sizeof(NotifyEntry));
  return h;
}

common::Result<std::unique_ptr<SessionSegment>> SessionSegment::Create(const RingSizes& sizes) {
  BRAID_RETURN_IF_ERROR(sizes.Check());
  const SegmentHeader layout = Layout(sizes);
  const int fd = memfd_create("braid-session", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return Errno("memfd_create");
  if (ftruncate(fd, static_cast<off_t>(layout.total_bytes)) != 0 ||
      fcntl(fd, F_ADD_SEALS, kSizeSeals) != 0) {
    Status s = Errno("sizing the session segment");
    close(fd);
    return s;
  }
  // Its pages are taken now (charged to the maker's memory cgroup, which admitted them), not as
  // the rings go round: a page that cannot be had then is the kernel's OOM kill, not an error.
  if (const int err = posix_fallocate(fd, 0, static_cast<off_t>(layout.total_bytes)); err != 0) {
    close(fd);
    return err == ENOSPC || err == ENOMEM
               ? Status::NoResource("no memory for a session segment of " +
                                    std::to_string(layout.total_bytes) +
                                    " bytes: close sessions no longer used or ask for smaller "
                                    "rings")
               : Status::FromErrno(err, "taking the pages of the session segment");
  }
  void* base = mmap(nullptr, layout.total_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    Status s = Errno("mmap of the session segment");
    close(fd);
    return s;
  }
  auto* bytes = static_cast<uint8_t*>(base);
  std::memcpy(bytes, &layout, sizeof(layout));
  std::construct_at(reinterpret_cast<RingControl*>(bytes + layout.sq_control));
  std::construct_at(reinterpret_cast<RingControl*>(bytes + layout.cq_control));
  std::construct_at(reinterpret_cast<RingControl*>(bytes + layout.nq_control));
  return std::make_unique<SessionSegment>(Token(), fd, bytes, layout);
}

common::Result<std::unique_ptr<SessionSegment>> SessionSegment::Attach(int fd) {
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    Status s = Errno("fstat of the session segment");
    close(fd);
    return s;
  }
  const int seals = fcntl(fd, F_GET_SEALS);
  if (seals < 0 || (static_cast<unsigned int>(seals) & (F_SEAL_SHRINK | F_SEAL_GROW)) !=
                       (F_SEAL_SHRINK | F_SEAL_GROW)) {
    close(fd);
    return Status::InvalidArgument("the session segment's size is not sealed");
  }
  SegmentHeader h{};
  if (static_cast<uint64_t>(st.st_size) < sizeof(h) ||
      pread(fd, &h, sizeof(h), 0) != static_cast<ssize_t>(sizeof(h))) {
    close(fd);
    return Status::InvalidArgument("the session segment is shorter than its header");
  }
  if (h.magic != kSegmentMagic || h.version != kSessionVersion) {
    close(fd);
    return Status::InvalidArgument("not a session segment of version " +
                                   std::to_string(kSessionVersion));
  }
  const RingSizes sizes{h.sq_entries, h.cq_entries, h.nq_entries};
  if (!sizes.Valid()) {
    close(fd);
    return Status::InvalidArgument("the session segment's ring sizes are not valid");
  }
  const SegmentHeader expect = Layout(sizes);
  if (std::memcmp(&h, &expect, sizeof(h)) != 0 ||
      static_cast<uint64_t>(st.st_size) != expect.total_bytes) {
    close(fd);
    return Status::InvalidArgument("the session segment's layout does not match its ring sizes");
  }
  void* base = mmap(nullptr, expect.total_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    Status s = Errno("mmap of the session segment");
    close(fd);
    return s;
  }
  return std::make_unique<SessionSegment>(Token(), fd, static_cast<uint8_t*>(base), expect);
}

SessionSegment::~SessionSegment() {
  munmap(base_, layout_.total_bytes);
  close(fd_);
}

SpscRing<SubmitEntry> SessionSegment::SubmitRing() const {
  return {reinterpret_cast<RingControl*>(base_ + layout_.sq_control),
          reinterpret_cast<SubmitEntry*>(base_ + layout_.sq_ring), layout_.sq_entries};
}

SpscRing<CompletionEntry> SessionSegment::CompletionRing() const {
  return {reinterpret_cast<RingControl*>(base_ + layout_.cq_control),
          reinterpret_cast<CompletionEntry*>(base_ + layout_.cq_ring), layout_.cq_entries};
}

SpscRing<NotifyEntry> SessionSegment::NotifyRing() const {
  return {reinterpret_cast<RingControl*>(base_ + layout_.nq_control),
          reinterpret_cast<NotifyEntry*>(base_ + layout_.nq_ring), layout_.nq_entries};
}

}  // namespace braid::session
