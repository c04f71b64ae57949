// vireo/virtio: virtio-console (5.3), port 0 only (no MULTIPORT): receiveq 0 carries host input to the
// guest, transmitq 1 carries guest output to the host. The host side is stdio, a pty, or a unix socket
// (listening; one client at a time).
#pragma once
#include <string>

#include "common/fd.h"
#include "virtio/virtio_device.h"

namespace vireo::virtio {

struct ConsoleBackendSpec {
  enum class Kind { Stdio, Pty, Unix, Fds } kind = Kind::Stdio;
  std::string path;           // unix socket path
  int in_fd = -1, out_fd = -1;  // Kind::Fds (tests): borrowed, not closed
};

class ConsoleDevice : public VirtioDevice {
 public:
  ConsoleDevice(GuestMemory& mem, std::string id, const ConsoleBackendSpec& spec);
  ~ConsoleDevice() override;
  std::string type_name() const override { return "virtio-console"; }
  std::string details() const override { return details_; }
  const std::string& pty_path() const { return pty_path_; }

 protected:
  uint64_t features() const override { return 0; }
  void process_queue(uint16_t q) override;
  void activate() override;
  void pause_io() override { watch_input(false); }

 private:
  void pump_input();         // mu_ held
  void watch_input(bool on);  // mu_ held
  void on_listen();
  void drop_client();

  ConsoleBackendSpec spec_;
  UniqueFd owned_in_, owned_out_, listen_;
  int in_fd_ = -1, out_fd_ = -1;
  bool watching_ = false;
  bool input_eof_ = false;
  std::string pty_path_, details_;
};

}  // namespace vireo::virtio
