// The stored form of one prefix block: the bytes every stream (layer x KV head)
// holds for `block_tokens` tokens, exactly as the block pool holds them (never
// re-quantized), behind a header that says what they are and a checksum that
// says they are intact. The disk and Redis tiers store these records as opaque
// byte strings; one record is one file or value.
//
// Layout (little-endian; offsets in bytes):
//   [0, 8)    magic "SLIMKVB1"
//   [8, 12)   u32 header bytes (= kRecordHeaderBytes)
//   [12, 16)  u32 reserved, 0
//   [16, 32)  fingerprint (u64 lo, u64 hi; fingerprint.h)
//   [32, 40)  u64 key: the block's prefix hash chain key (PrefixIndex::Key)
//   [40, 48)  u64 parent: the chain key of the block before it
//   (PrefixIndex::kRoot for the first) [48, 52)  u32 n_tokens: tokens of the
//   block (the block size), 1 <= n_tokens <= kMaxRecordTokens [52, 56)  u32
//   n_streams: 1 <= n_streams <= kMaxRecordStreams [56, 60)  u32 staged block
//   bytes, [60, 64) u32 sealed block bytes (each <= kMaxBlockBytes) [64, 72)
//   u64 payload bytes (everything after the header) [72, 80)  u64 checksum:
//   XXH3-64 of bytes [0, 72) followed by the payload payload:  i32
//   tokens[n_tokens]; u8 kinds[n_streams] (StreamKind), zero-padded to a
//   multiple
//             of 8; then the block bytes of every stream whose kind is not
//             kAbsent, in stream order, each staged or sealed block bytes long.
// Invariant: payload bytes == 4 n_tokens + pad8(n_streams) + sum of the present
// blocks' bytes, and the record is exactly kRecordHeaderBytes + payload bytes
// long.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "base/status.h"
#include "kv/tiers/fingerprint.h"

namespace slimkv::kv::tiers {

inline constexpr size_t kRecordHeaderBytes = 80;
inline constexpr uint32_t kMaxRecordTokens = 1 << 16;
inline constexpr uint32_t kMaxRecordStreams = 1 << 16;
inline constexpr uint32_t kMaxBlockBytes = 1 << 26;

enum class StreamKind : uint8_t {
  kAbsent = 0,  // a window layer had already freed the block
  kStaged = 1,  // a staging block (high precision, not yet sealed)
  kSealed = 2,  // a block in the final format
};

// What a record says before its payload (the fields of the header above).
struct RecordHeader {
  Fingerprint fingerprint;
  uint64_t key = 0, parent = 0;
  uint32_t n_tokens = 0, n_streams = 0;
  uint32_t staged_bytes = 0, sealed_bytes = 0;
  uint64_t payload_bytes = 0;
  uint64_t checksum = 0;
};

// One block to encode: its header fields (payload_bytes and checksum are
// computed), its tokens, and per stream its kind and the bytes the pool holds
// (nullptr where absent).
struct RecordSource {
  RecordHeader header;
  std::span<const int32_t> tokens;         // [n_tokens]
  std::span<const StreamKind> kinds;       // [n_streams]
  std::span<const uint8_t *const> blocks;  // [n_streams]
};

std::vector<uint8_t> EncodeRecord(const RecordSource &src);

// Reads and checks only the header of `bytes` (at least its first
// kRecordHeaderBytes): magic, sizes within limits, and payload bytes consistent
// with the sizes; `total_bytes` is the record's whole length (a file's size).
// DataLoss naming the field that is wrong.
Result<RecordHeader> ParseRecordHeader(std::span<const uint8_t> bytes, uint64_t total_bytes);

// A checked record, pointing into the bytes it was parsed from (which must
// outlive it).
class RecordView {
 public:
  const RecordHeader &header() const { return header_; }
  int32_t Token(int i) const;
  void CopyTokens(std::vector<int32_t> *out) const;
  StreamKind Kind(int stream) const { return static_cast<StreamKind>(bytes_[kinds_offset_ + stream]); }
  // The stored bytes of a present stream's block (staged or sealed block bytes
  // long).
  const uint8_t *Block(int stream) const { return bytes_.data() + block_offset_[stream]; }

 private:
  friend Result<RecordView> ParseRecord(std::span<const uint8_t>, const Fingerprint &, uint64_t);
  RecordHeader header_;
  std::span<const uint8_t> bytes_;
  size_t kinds_offset_ = 0;
  std::vector<size_t> block_offset_;  // [stream]; 0 where absent
};

// Checks everything: the header, the checksum over header and payload, and that
// the record is the one asked for (its fingerprint and key). DataLoss for a
// truncated or corrupt record, InvalidArgument for an intact record of another
// fingerprint or key; either way the caller drops it and recomputes the block.
Result<RecordView> ParseRecord(std::span<const uint8_t> bytes, const Fingerprint &fingerprint, uint64_t key);

}  // namespace slimkv::kv::tiers
