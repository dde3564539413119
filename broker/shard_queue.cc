#include "broker/shard_queue.h"

#include <cstdlib>
#include <iterator>
#include <utility>

namespace sb::broker {

Status ValidateQueuePolicy(const QueuePolicy& policy) {
  if (policy.max_messages == 0) return Status::InvalidConfig("queue max_messages must be > 0");
  if (policy.max_bytes == 0) return Status::InvalidConfig("queue max_bytes must be > 0");
  return Status::Ok();
}

ShardQueue::ShardQueue(QueuePolicy policy) : policy_(policy) {
  // A zero bound would drop every message: a broken invariant, not input.
  if (!ValidateQueuePolicy(policy_).ok()) std::abort();
}

void ShardQueue::DropHead(std::vector<QueuedMessage>* dropped) {
  bytes_ -= queue_.front().bytes;
  counters_.dropped_bytes += queue_.front().bytes;
  if (dropped != nullptr) dropped->push_back(std::move(queue_.front()));
  queue_.pop_front();
}

PushResult ShardQueue::Push(QueuedMessage msg, std::vector<QueuedMessage>* dropped) {
  ++counters_.pushed;
  auto refuse = [&] {
    counters_.dropped_bytes += msg.bytes;
    if (dropped != nullptr) dropped->push_back(std::move(msg));
  };
  if (closed_) {
    ++counters_.dropped_disconnect;
    refuse();
    return {PushOutcome::kDisconnect, 1};
  }
  // Checked first: shedding the whole queue would not make room for it, so
  // the policy must not be applied (and, under kDisconnect, one oversized
  // message is the sender's problem, not this link's).
  if (msg.bytes > policy_.max_bytes) {
    ++counters_.dropped_too_large;
    refuse();
    return {PushOutcome::kTooLarge, 0};
  }
  PushResult result;
  if (!Fits(msg.bytes)) {
    if (policy_.overload == OverloadPolicy::kDisconnect) {
      result = {PushOutcome::kDisconnect, queue_.size() + 1};
      for (QueuedMessage& m : Close()) {
        if (dropped != nullptr) dropped->push_back(std::move(m));
      }
      ++counters_.dropped_disconnect;
      refuse();
      return result;
    }
    result.outcome = PushOutcome::kShed;
    while (!Fits(msg.bytes)) {
      DropHead(dropped);
      ++result.dropped;
    }
    counters_.dropped_shed += result.dropped;
  }
  bytes_ += msg.bytes;
  ++counters_.enqueued;
  queue_.push_back(std::move(msg));
  return result;
}

void ShardQueue::Grant(uint64_t n) {
  if (closed_) return;
  credit_ = n > std::numeric_limits<uint64_t>::max() - credit_
                ? std::numeric_limits<uint64_t>::max()
                : credit_ + n;
}

void ShardQueue::ResetCredit(uint64_t n) {
  if (!closed_) credit_ = n;
}

void ShardQueue::Requeue(std::vector<QueuedMessage> msgs) {
  for (auto it = msgs.rbegin(); it != msgs.rend(); ++it) {
    --counters_.sent;
    counters_.sent_bytes -= it->bytes;
    if (closed_) {
      ++counters_.dropped_disconnect;
      counters_.dropped_bytes += it->bytes;
      continue;
    }
    bytes_ += it->bytes;
    queue_.push_front(std::move(*it));
  }
}

std::vector<QueuedMessage> ShardQueue::Close() {
  counters_.dropped_disconnect += queue_.size();
  counters_.dropped_bytes += bytes_;
  std::vector<QueuedMessage> out(std::make_move_iterator(queue_.begin()),
                                 std::make_move_iterator(queue_.end()));
  queue_.clear();
  queue_.shrink_to_fit();
  bytes_ = 0;
  credit_ = 0;
  closed_ = true;
  return out;
}

size_t ShardQueue::PopSendable(std::vector<QueuedMessage>* out, size_t max) {
  size_t n = 0;
  while (n < max && credit_ > 0 && !queue_.empty()) {
    QueuedMessage& head = queue_.front();
    bytes_ -= head.bytes;
    counters_.sent_bytes += head.bytes;
    out->push_back(std::move(head));
    queue_.pop_front();
    --credit_;
    ++n;
  }
  counters_.sent += n;
  return n;
}

std::optional<int64_t> ShardQueue::oldest_enqueued_us() const {
  if (queue_.empty()) return std::nullopt;
  return queue_.front().enqueued_us;
}

}  // namespace sb::broker
