// libFuzzer target for the hand-off state's decoder (worker/handoff_state):
// what a new shard process reads from the one it replaces — a process of
// another build, or one that died halfway through writing.
//
// Input: one record, a session, a chunk of connections or (version 3 on) a
// sockets record (worker/fuzz/corpus_handoff/ holds valid ones of every
// kind, of every version: WebSockets in version 1 and 2, HTTP connections in
// 2, sockets in 3). A chunk or a sockets record is decoded as if it came with
// as many fds as its count says; a chunk also as if its fds came before.
//
// Besides "no crash, no sanitizer report" it checks properties: a refusal is
// Refused (or NotFound for an unknown version) with a message that says
// where it comes from; a record of the current version that decodes encodes
// back to exactly its bytes (one of an older version, to a current record
// that decodes to the same state); the connections of a chunk, chunked again, come back the same; a
// record split into messages is put back together to the same bytes.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "common/testing/fuzz_check.h"
#include "worker/handoff_state.h"

namespace {

namespace handoff = sb::worker::handoff;
using sb::Status;

void CheckRefusal(const Status& s) {
  constexpr std::string_view kPrefix = "handoff state: ";
  FUZZ_CHECK(!s.ok());
  FUZZ_CHECK(s.code() == Status::Code::kRefused || s.code() == Status::Code::kNotFound);
  FUZZ_CHECK(s.message().size() > kPrefix.size());
  FUZZ_CHECK(std::string_view(s.message()).substr(0, kPrefix.size()) == kPrefix);
  if (s.code() == Status::Code::kNotFound) {
    FUZZ_CHECK(s.message().find("unknown state version") != std::string::npos);
  }
}

bool Current(std::string_view record) {
  return handoff::DecodeHeader(record).value().version == handoff::kVersion;
}

void CheckSession(std::string_view record) {
  sb::Result<handoff::Session> s = handoff::DecodeSession(record);
  if (!s.ok()) return CheckRefusal(s.status());
  sb::Result<std::string> again = handoff::EncodeSession(*s);
  FUZZ_CHECK(again.ok());
  if (Current(record)) {
    FUZZ_CHECK(again.value() == record);
  } else {
    sb::Result<handoff::Session> back = handoff::DecodeSession(again.value());
    FUZZ_CHECK(back.ok() && back.value() == s.value());
  }
}

// The count, as a chunk or a sockets record states it (u16 after the header).
size_t StatedCount(std::string_view record) {
  if (record.size() < handoff::kHeaderBytes + 2) return 0;
  return static_cast<uint8_t>(record[handoff::kHeaderBytes]) |
         static_cast<size_t>(static_cast<uint8_t>(record[handoff::kHeaderBytes + 1])) << 8;
}

void CheckSockets(std::string_view record) {
  sb::Result<std::vector<uint64_t>> ids = handoff::DecodeSockets(record, StatedCount(record));
  if (!ids.ok()) return CheckRefusal(ids.status());
  FUZZ_CHECK(!ids->empty() && ids->size() <= handoff::kMaxConnectionsPerChunk);
  sb::Result<std::string> again = handoff::EncodeSockets(*ids);
  FUZZ_CHECK(again.ok() && again.value() == record);  // version 3 is its first
  FUZZ_CHECK(!handoff::DecodeSockets(record, ids->size() + 1).ok());
}

void CheckChunk(std::string_view record) {
  const size_t fds = StatedCount(record);
  // Whether or not the fds came before, a chunk decodes the same.
  sb::Result<std::vector<handoff::Connection>> before =
      handoff::DecodeChunk(record, handoff::kFdsSentBefore);
  sb::Result<std::vector<handoff::Connection>> conns = handoff::DecodeChunk(record, fds);
  FUZZ_CHECK(before.ok() == conns.ok());
  if (conns.ok()) FUZZ_CHECK(before.value() == conns.value());
  if (!conns.ok()) return CheckRefusal(conns.status());
  FUZZ_CHECK(!conns->empty() && conns->size() <= handoff::kMaxConnectionsPerChunk);
  sb::Result<std::string> again = handoff::EncodeChunk(*conns);
  FUZZ_CHECK(again.ok());
  if (Current(record)) {
    FUZZ_CHECK(again.value() == record);
  } else {
    sb::Result<std::vector<handoff::Connection>> back =
        handoff::DecodeChunk(again.value(), conns->size());
    FUZZ_CHECK(back.ok() && back.value() == conns.value());
  }

  sb::Result<std::vector<handoff::Chunk>> chunks = handoff::EncodeChunks(*conns);
  FUZZ_CHECK(chunks.ok());
  size_t next = 0;
  for (const handoff::Chunk& chunk : *chunks) {
    FUZZ_CHECK(chunk.first == next && chunk.count > 0);
    sb::Result<std::vector<handoff::Connection>> back =
        handoff::DecodeChunk(chunk.record, chunk.count);
    FUZZ_CHECK(back.ok());
    for (size_t i = 0; i < chunk.count; ++i) FUZZ_CHECK((*back)[i] == (*conns)[next + i]);
    next += chunk.count;
  }
  FUZZ_CHECK(next == conns->size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view record(reinterpret_cast<const char*>(data), size);
  sb::Result<handoff::Header> h = handoff::DecodeHeader(record);
  if (!h.ok()) {
    CheckRefusal(h.status());
    return 0;
  }
  if (h->record_bytes() == record.size()) {
    handoff::RecordAssembler assembler;
    for (std::string_view part : handoff::SplitRecord(record)) {
      FUZZ_CHECK(!assembler.complete());
      FUZZ_CHECK(assembler.Add(part).ok());
    }
    FUZZ_CHECK(assembler.complete());
    FUZZ_CHECK(assembler.Take() == record);
  }
  if (h->kind == handoff::RecordKind::kSession) {
    CheckSession(record);
  } else if (h->kind == handoff::RecordKind::kSockets) {
    CheckSockets(record);
  } else {
    CheckChunk(record);
  }
  return 0;
}
