#include "kv/tiers/block_record.h"

#include <xxhash.h>

#include <bit>
#include <cstring>
#include <memory>

#include "base/check.h"

namespace slimkv::kv::tiers {
namespace {

static_assert(std::endian::native == std::endian::little, "records are stored little-endian");

constexpr char kMagic[8] = {'S', 'L', 'I', 'M', 'K', 'V', 'B', '1'};
constexpr size_t kChecksumOffset = 72;

template <typename T>
void Put(std::vector<uint8_t> &b, size_t off, T v) {
  std::memcpy(b.data() + off, &v, sizeof(T));
}
template <typename T>
T Get(std::span<const uint8_t> b, size_t off) {
  T v;
  std::memcpy(&v, b.data() + off, sizeof(T));
  return v;
}

size_t Pad8(size_t n) { return (n + 7) / 8 * 8; }

uint64_t Checksum(std::span<const uint8_t> header, std::span<const uint8_t> payload) {
  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> st(XXH3_createState(), &XXH3_freeState);
  CHECK(st != nullptr, "XXH3_createState failed");
  XXH3_64bits_reset(st.get());
  XXH3_64bits_update(st.get(), header.data(), kChecksumOffset);
  XXH3_64bits_update(st.get(), payload.data(), payload.size());
  return XXH3_64bits_digest(st.get());
}

}  // namespace

std::vector<uint8_t> EncodeRecord(const RecordSource &src) {
  const RecordHeader &h = src.header;
  CHECK(
      src.tokens.size() == h.n_tokens && src.kinds.size() == h.n_streams && src.blocks.size() == h.n_streams,
      "record source sizes disagree with its header");
  size_t payload = 4 * static_cast<size_t>(h.n_tokens) + Pad8(h.n_streams);
  for (uint32_t st = 0; st < h.n_streams; ++st) {
    if (src.kinds[st] == StreamKind::kStaged) payload += h.staged_bytes;
    if (src.kinds[st] == StreamKind::kSealed) payload += h.sealed_bytes;
  }
  std::vector<uint8_t> b(kRecordHeaderBytes + payload, 0);
  std::memcpy(b.data(), kMagic, 8);
  Put<uint32_t>(b, 8, kRecordHeaderBytes);
  Put<uint64_t>(b, 16, h.fingerprint.lo);
  Put<uint64_t>(b, 24, h.fingerprint.hi);
  Put<uint64_t>(b, 32, h.key);
  Put<uint64_t>(b, 40, h.parent);
  Put<uint32_t>(b, 48, h.n_tokens);
  Put<uint32_t>(b, 52, h.n_streams);
  Put<uint32_t>(b, 56, h.staged_bytes);
  Put<uint32_t>(b, 60, h.sealed_bytes);
  Put<uint64_t>(b, 64, payload);
  size_t off = kRecordHeaderBytes;
  std::memcpy(b.data() + off, src.tokens.data(), src.tokens.size_bytes());
  off += src.tokens.size_bytes();
  for (uint32_t st = 0; st < h.n_streams; ++st) b[off + st] = static_cast<uint8_t>(src.kinds[st]);
  off += Pad8(h.n_streams);
  for (uint32_t st = 0; st < h.n_streams; ++st) {
    if (src.kinds[st] == StreamKind::kAbsent) continue;
    const size_t n = src.kinds[st] == StreamKind::kStaged ? h.staged_bytes : h.sealed_bytes;
    std::memcpy(b.data() + off, src.blocks[st], n);
    off += n;
  }
  const std::span<const uint8_t> all(b);
  Put<uint64_t>(b, kChecksumOffset, Checksum(all, all.subspan(kRecordHeaderBytes)));
  return b;
}

Result<RecordHeader> ParseRecordHeader(std::span<const uint8_t> b, uint64_t total_bytes) {
  if (b.size() < kRecordHeaderBytes || total_bytes < kRecordHeaderBytes) {
    return DataLoss("KV block record of {} bytes is shorter than its {}-byte header", total_bytes,
                    kRecordHeaderBytes);
  }
  if (std::memcmp(b.data(), kMagic, 8) != 0) return DataLoss("KV block record: bad magic (not SLIMKVB1)");
  if (Get<uint32_t>(b, 8) != kRecordHeaderBytes) {
    return DataLoss("KV block record: header bytes {} (expected {})", Get<uint32_t>(b, 8),
                    kRecordHeaderBytes);
  }
  RecordHeader h;
  h.fingerprint = {.lo = Get<uint64_t>(b, 16), .hi = Get<uint64_t>(b, 24)};
  h.key = Get<uint64_t>(b, 32);
  h.parent = Get<uint64_t>(b, 40);
  h.n_tokens = Get<uint32_t>(b, 48);
  h.n_streams = Get<uint32_t>(b, 52);
  h.staged_bytes = Get<uint32_t>(b, 56);
  h.sealed_bytes = Get<uint32_t>(b, 60);
  h.payload_bytes = Get<uint64_t>(b, 64);
  h.checksum = Get<uint64_t>(b, kChecksumOffset);
  if (h.n_tokens < 1 || h.n_tokens > kMaxRecordTokens)
    return DataLoss("KV block record: {} tokens", h.n_tokens);
  if (h.n_streams < 1 || h.n_streams > kMaxRecordStreams)
    return DataLoss("KV block record: {} streams", h.n_streams);
  if (h.staged_bytes > kMaxBlockBytes || h.sealed_bytes > kMaxBlockBytes) {
    return DataLoss("KV block record: block bytes {} / {} over {}", h.staged_bytes, h.sealed_bytes,
                    kMaxBlockBytes);
  }
  // With every size bounded above, this cannot overflow.
  const uint64_t fixed = 4ull * h.n_tokens + Pad8(h.n_streams);
  const uint64_t most = fixed + static_cast<uint64_t>(h.n_streams) * std::max(h.staged_bytes, h.sealed_bytes);
  if (h.payload_bytes < fixed || h.payload_bytes > most) {
    return DataLoss(
        "KV block record: payload of {} bytes cannot hold {} "
        "tokens and {} streams",
        h.payload_bytes, h.n_tokens, h.n_streams);
  }
  if (total_bytes != kRecordHeaderBytes + h.payload_bytes) {
    return DataLoss(
        "KV block record is {} bytes, its header says {} "
        "(truncated or overlong)",
        total_bytes, kRecordHeaderBytes + h.payload_bytes);
  }
  return h;
}

int32_t RecordView::Token(int i) const {
  return Get<int32_t>(bytes_, kRecordHeaderBytes + 4 * static_cast<size_t>(i));
}

void RecordView::CopyTokens(std::vector<int32_t> *out) const {
  out->resize(header_.n_tokens);
  std::memcpy(out->data(), bytes_.data() + kRecordHeaderBytes, 4 * static_cast<size_t>(header_.n_tokens));
}

Result<RecordView> ParseRecord(std::span<const uint8_t> bytes, const Fingerprint &fingerprint, uint64_t key) {
  ASSIGN_OR_RETURN(const RecordHeader h, ParseRecordHeader(bytes, bytes.size()));
  if (Checksum(bytes, bytes.subspan(kRecordHeaderBytes)) != h.checksum) {
    return DataLoss("KV block record {:016x}: checksum mismatch (corrupt)", h.key);
  }
  // Intact from here on: the checksum covers every field read below.
  if (!(h.fingerprint == fingerprint)) {
    return InvalidArgument("KV block record {:016x} has fingerprint {}, expected {}", h.key,
                           h.fingerprint.Hex(), fingerprint.Hex());
  }
  if (h.key != key) return InvalidArgument("KV block record has key {:016x}, expected {:016x}", h.key, key);
  RecordView v;
  v.header_ = h;
  v.bytes_ = bytes;
  v.kinds_offset_ = kRecordHeaderBytes + 4 * static_cast<size_t>(h.n_tokens);
  v.block_offset_.assign(h.n_streams, 0);
  size_t off = v.kinds_offset_ + Pad8(h.n_streams);
  for (uint32_t st = 0; st < h.n_streams; ++st) {
    const auto kind = static_cast<StreamKind>(bytes[v.kinds_offset_ + st]);
    if (kind == StreamKind::kAbsent) continue;
    if (kind != StreamKind::kStaged && kind != StreamKind::kSealed) {
      return DataLoss("KV block record {:016x}: stream {} has kind {}", h.key, st, static_cast<int>(kind));
    }
    v.block_offset_[st] = off;
    off += kind == StreamKind::kStaged ? h.staged_bytes : h.sealed_bytes;
  }
  if (off != bytes.size()) {
    return DataLoss("KV block record {:016x}: its streams need {} bytes, it holds {}", h.key, off,
                    bytes.size());
  }
  return v;
}

}  // namespace slimkv::kv::tiers
