// The outputs of one client request (one or more choices), handed from the engine thread to
// the thread that serves the client: the engine side pushes and never blocks, the client side
// pops with a timeout so it can send keep-alives and notice a client that went away.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>

#include "engine/request.h"

namespace slimkv::engine {

class RequestStream {
 public:
  struct Item {
    int index = 0;  // which choice (request) of the client request
    RequestOutput output;
  };

  // A callback for RequestParams::on_output that pushes choice `index`'s outputs. It holds
  // the stream, so the stream outlives the client thread when that one leaves early.
  static OutputCallback Sink(const std::shared_ptr<RequestStream>& stream, int index) {
    return [stream, index](const RequestOutput& out) { stream->Push(index, out); };
  }

  void Push(int index, const RequestOutput& out) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      items_.push_back(Item{index, out});
    }
    cv_.notify_one();
  }

  // Takes the oldest item; false if none arrived within `timeout_s` seconds.
  bool Pop(Item* item, double timeout_s) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, std::chrono::duration<double>(timeout_s), [&] { return !items_.empty(); })) {
      return false;
    }
    *item = std::move(items_.front());
    items_.pop_front();
    return true;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> items_;
};

}  // namespace slimkv::engine
