// vireo/devices: where a serial port's bytes go and come from (--serial stdio|none|file=PATH|pty|unix=PATH).
//
//   stdio      output to stdout; input from stdin (a tty is put in raw mode, ISIG kept so Ctrl-C still stops
//              the VMM, and restored on exit)
//   none       output dropped, no input
//   file=PATH  output appended to PATH (created 0644, truncated at start); no input
//   pty        a new pseudo-terminal; its path is printed to stderr ("vireo-vmm: serial0: pty /dev/pts/N")
//              and shown in query-vm; output written while nobody has the pty open is dropped
//   unix=PATH  a listening unix stream socket at PATH (replaced if it exists, removed on exit); one client at a
//              time (later ones are refused while one is connected); output while no client is connected is
//              dropped
// Input is read on an EventLoop thread and fed to the UART no faster than its FIFO drains.
#pragma once
#include <termios.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>

#include "common/event_loop.h"
#include "common/fd.h"
#include "devices/serial.h"

namespace vireo {

struct SerialSpec {
  enum class Kind { Stdio, None, File, Pty, Unix };
  Kind kind = Kind::Stdio;
  std::string path;  // File, Unix
  bool input = true;  // Stdio: read stdin (off when another device, e.g. a virtio console, owns it)
};

// Throws Error("serial: unknown backend 'x' (stdio, none, file=PATH, pty, unix=PATH)") and the like.
SerialSpec parse_serial_spec(const std::string& text);

class SerialBackend {
 public:
  // Opens files/pty/socket now (so errors surface at start-up). Throws Error with context.
  static std::unique_ptr<SerialBackend> open(const SerialSpec& spec);
  virtual ~SerialBackend() = default;

  // Guest output (called from vCPU threads with the UART lock held; never blocks for long).
  virtual void write(std::span<const uint8_t> bytes) = 0;
  // Starts feeding input into `uart` from `loop`'s thread. The backend must outlive the loop's use of it.
  virtual void attach(EventLoop& loop, Serial16550& uart) = 0;
  // "stdio", "file=/x", "pty=/dev/pts/3", "unix=/x", "none".
  virtual std::string describe() const = 0;
};

// Puts a tty in raw mode (keeping ISIG) and restores it when destroyed, and from restore_all_ttys().
class RawTty {
 public:
  explicit RawTty(int fd);
  ~RawTty();
  RawTty(const RawTty&) = delete;
  RawTty& operator=(const RawTty&) = delete;
  void restore();

 private:
  int fd_;
  termios saved_{};
  bool active_ = false;
};

// Restores every tty a RawTty changed (for exit paths that skip destructors).
void restore_all_ttys();

}  // namespace vireo
