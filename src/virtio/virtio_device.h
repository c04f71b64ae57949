// vireo/virtio: the transport-independent half of a virtio device: feature negotiation, device status,
// queue configuration and activation, config space, and a device thread (EventLoop) that services queue
// kicks. Transports (virtio-pci, virtio-mmio) map their registers onto the public methods below and supply
// an InterruptSink; device models (blk, net, ...) derive and implement the protected hooks.
//
// Threads: transport methods run on vCPU threads; queue processing runs on the device's own loop thread
// (never a vCPU thread); async completions (block backend threads) use with_device_lock(). One mutex (mu_)
// guards the state. A guest error in a queue marks the device broken: status DEVICE_NEEDS_RESET, a config
// interrupt, one log line, and no more processing until the driver resets the device.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/event_loop.h"
#include "common/json_reader.h"
#include "memory/guest_memory.h"
#include "virtio/virtio_spec.h"
#include "virtio/virtqueue.h"

namespace vireo::virtio {

class InterruptSink {
 public:
  virtual ~InterruptSink() = default;
  virtual void queue_interrupt(uint16_t queue) = 0;  // used buffer notification
  virtual void config_interrupt() = 0;               // configuration change notification
};

class VirtioDevice {
 public:
  VirtioDevice(GuestMemory& mem, std::string id, uint32_t device_type, uint16_t num_queues,
               uint16_t max_queue_size);
  virtual ~VirtioDevice();
  VirtioDevice(const VirtioDevice&) = delete;
  VirtioDevice& operator=(const VirtioDevice&) = delete;

  // ---- set-up
  void set_interrupt_sink(InterruptSink* sink) {
    std::lock_guard lock(mu_);
    irq_ = sink;
  }
  void start();  // starts the device thread (after the transport is wired)

  // ---- transport side (any thread)
  const std::string& id() const { return id_; }
  uint32_t device_type() const { return type_; }
  uint64_t device_features() const;  // offered: device bits + VERSION_1, INDIRECT_DESC, EVENT_IDX
  uint64_t driver_features() const;
  void set_driver_features(uint64_t f);  // ignored once FEATURES_OK is set
  uint8_t status() const;
  void set_status(uint8_t status);  // 0 resets the device
  uint32_t config_generation() const;
  void read_config(uint64_t offset, std::span<uint8_t> data);
  void write_config(uint64_t offset, std::span<const uint8_t> data);

  uint16_t num_queues() const { return static_cast<uint16_t>(queues_.size()); }
  uint16_t queue_max_size(uint16_t q) const;
  QueueConfig queue_config(uint16_t q) const;
  void set_queue_config(uint16_t q, const QueueConfig& cfg);  // ignored while the queue is enabled
  bool queue_enabled(uint16_t q) const;
  void enable_queue(uint16_t q);  // validates the rings; a bad ring marks the device broken
  int kick_fd(uint16_t q) const;  // the doorbell eventfd (register it as an ioeventfd)
  void kick(uint16_t q);          // a doorbell that arrived as a register write instead
  bool broken() const;

  // ---- VM lifecycle (called by the transport for the VMM, vCPUs parked)
  // After pause() returns the device thread is idle, in-flight asynchronous requests have completed, host
  // input (tap, console) is not read, and nothing more is written to guest memory until resume(). Kicks that
  // arrive meanwhile are not lost: resume() looks at every queue again.
  void pause();
  void resume();
  bool paused() const;

  // ---- snapshot state (virtio_state.cpp; called by the transport's save/restore, device paused or not yet
  // running). Features, status, config space and every queue's configuration and indexes; in-flight
  // requests were drained by pause(), and chains a device holds without an answer (held_chains) are handed
  // back by rewinding last_avail, so the restored device pops them again. restore_virtio() validates
  // everything against this device and guest RAM and throws Error; it re-activates a DRIVER_OK device.
  nlohmann::json save_virtio();
  void restore_virtio(JsonReader& r);

  virtual std::string details() const { return {}; }  // for query-vm, e.g. "path=disk.img ro"
  virtual std::string type_name() const = 0;          // "virtio-blk", ...

 protected:
  // ---- device hooks. Called with mu_ held unless noted.
  virtual uint64_t features() const = 0;  // device-specific bits (0..23, and others the device supports)
  virtual void process_queue(uint16_t q) = 0;  // on the loop thread; may throw (marks the device broken)
  virtual void activate() {}                  // DRIVER_OK was set
  virtual void quiesce() {}                   // mu_ NOT held: wait for in-flight async work (before a reset)
  virtual void device_reset() {}              // after quiesce, mu_ held: forget per-driver state
  virtual void pause_io() {}                  // mu_ held: stop watching host fds (tap, console input)
  virtual void config_write(uint64_t offset, std::span<const uint8_t> data) { (void)offset; (void)data; }
  // Snapshot hooks, mu_ held. held_chains: how many of the chains last popped from queue q the device holds
  // unanswered (they must be the most recent ones); they are dropped at save and popped again on restore.
  virtual uint16_t held_chains(uint16_t q) const { (void)q; return 0; }
  virtual nlohmann::json save_device() { return nlohmann::json::object(); }
  virtual void restore_device(JsonReader& r) { (void)r; }  // after activate() if DRIVER_OK; throws Error

  // ---- helpers for devices (mu_ held)
  Virtqueue* queue(uint16_t q);                 // nullptr unless enabled and activated
  void complete(uint16_t q, const DescChain& chain, uint32_t written);  // push + notify if wanted
  void notify_queue(uint16_t q);  // after Virtqueue::push()es: used-buffer notification if the driver wants one
  void fail_device(const std::string& why);     // DEVICE_NEEDS_RESET + config interrupt, logged once
  void config_changed();                        // bump generation + config interrupt
  bool negotiated(int bit) const { return driver_features_ & virtio::bit(bit); }
  bool active() const { return (status_ & kStatusDriverOk) && !broken_ && !paused_; }
  // For async completions from other threads: runs fn with mu_ held if the device was not reset since
  // `generation` (a value of reset_generation() taken when the work started); guest errors mark it broken.
  void with_device_lock(uint64_t generation, const std::function<void()>& fn);
  uint64_t reset_generation() const { return reset_gen_; }
  // Stops the device thread. Derived destructors must call this first (the thread calls virtual hooks).
  void shutdown();
  // Run process_queue(q) on the loop thread soon (e.g. from a completion that freed resources).
  void schedule(uint16_t q);

  GuestMemory& mem_;
  std::vector<uint8_t> config_;  // device config space bytes (little-endian); read_config serves these
  EventLoop loop_;
  mutable std::mutex mu_;

 private:
  struct QueueSlot {
    uint16_t max_size = 256;
    QueueConfig cfg;
    bool enabled = false;
    std::unique_ptr<Virtqueue> vq;
    std::unique_ptr<EventFd> kick;
  };
  void on_kick(uint16_t q);
  void run_queue(uint16_t q);  // mu_ held
  void reset_locked();

  std::string id_;
  uint32_t type_;
  std::vector<QueueSlot> queues_;
  InterruptSink* irq_ = nullptr;
  uint64_t driver_features_ = 0;
  uint8_t status_ = 0;
  uint32_t config_gen_ = 0;
  bool broken_ = false;
  bool logged_broken_ = false;
  uint64_t reset_gen_ = 0;
  bool started_ = false;
  bool stopped_ = false;
  bool paused_ = false;
};

}  // namespace vireo::virtio
