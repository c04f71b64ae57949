#include "devices/i8042.h"

namespace vireo {

namespace {
constexpr uint8_t kStatusOutFull = 0x01, kStatusSystem = 0x04, kStatusCmd = 0x08, kStatusUnlocked = 0x10;
}

I8042::I8042(std::function<void()> on_reset) : on_reset_(std::move(on_reset)) {}

void I8042::command(uint8_t cmd) {
  switch (cmd) {
    case 0x20: out_ = command_byte_; break;           // read command byte
    case 0x60: case 0xD1: case 0xD2: case 0xD3: case 0xD4: pending_ = cmd; break;  // next data byte is for us
    case 0xA7: command_byte_ |= 0x20; break;          // disable aux
    case 0xA8: command_byte_ &= static_cast<uint8_t>(~0x20); break;
    case 0xA9: out_ = 0xFF; break;                    // aux interface test: no aux device (clock line stuck)
    case 0xAA: out_ = 0x55; break;                    // controller self test passed
    case 0xAB: out_ = 0x00; break;                    // keyboard interface test passed
    case 0xAD: command_byte_ |= 0x10; break;          // disable keyboard
    case 0xAE: command_byte_ &= static_cast<uint8_t>(~0x10); break;
    case 0xC0: out_ = 0x00; break;                    // read input port
    case 0xD0: out_ = 0x01; break;                    // read output port: reset line released (bit 0 = 1)
    default:
      if (cmd >= 0xF0) {
        // Pulse output lines; bit 0 clear in the low nibble pulses the CPU reset line (0xFE).
        if (!(cmd & 0x01) && on_reset_) on_reset_();
      }
      break;
  }
}

void I8042::data_write(uint8_t v) {
  const uint8_t p = pending_;
  pending_ = 0;
  switch (p) {
    case 0x60: command_byte_ = v; break;
    case 0xD1:
      if (!(v & 0x01) && on_reset_) on_reset_();  // output port bit 0 low: CPU reset
      break;
    case 0xD2: out_ = v; break;  // write keyboard output buffer (echo)
    case 0xD3: break;            // write aux output buffer: no aux device
    case 0xD4: break;            // write to aux device: none present
    default:
      // A byte for the keyboard device: none attached, so answer with a time-out-free "resend"-less silence.
      break;
  }
}

void I8042::read(uint64_t offset, std::span<uint8_t> data) {
  std::lock_guard lock(mu_);
  for (auto& b : data) b = 0xff;
  if (data.empty()) return;
  if (offset == 0) {
    data[0] = out_.value_or(0x00);
    out_.reset();
  } else if (offset == 4) {
    uint8_t s = kStatusSystem | kStatusUnlocked;  // keyboard not inhibited (no keylock)
    if (out_) s |= kStatusOutFull;
    if (pending_) s |= kStatusCmd;
    data[0] = s;
  }
}

void I8042::write(uint64_t offset, std::span<const uint8_t> data) {
  if (data.empty()) return;
  std::lock_guard lock(mu_);
  if (offset == 0) data_write(data[0]);
  else if (offset == 4) command(data[0]);
}

}  // namespace vireo
