// vireo/devices: saved state of the legacy PC devices (serial, RTC, i8042), version 1 each. Restore
// validates every field (state files are untrusted) before touching the device, so a bad state leaves the
// device as it was.
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "devices/i8042.h"
#include "devices/rtc.h"
#include "devices/serial.h"

namespace vireo {

using nlohmann::json;

// ---- 16550A

json Serial16550::save_state() {
  std::lock_guard lock(mu_);
  return {{"ier", ier_},
          {"lcr", lcr_},
          {"mcr", mcr_},
          {"scr", scr_},
          {"fcr", fcr_},
          {"dll", dll_},
          {"dlm", dlm_},
          {"overrun", overrun_},
          {"thr_ipending", thr_ipending_},
          {"msr_delta", msr_delta_},
          {"last_msr_inputs", last_msr_inputs_},
          {"rx", json::binary(std::vector<uint8_t>(rx_.begin(), rx_.end()))}};
}

void Serial16550::restore_state(JsonReader& r, uint32_t) {
  const uint8_t ier = r.uint<uint8_t>("ier"), lcr = r.uint<uint8_t>("lcr"), mcr = r.uint<uint8_t>("mcr"),
                scr = r.uint<uint8_t>("scr"), fcr = r.uint<uint8_t>("fcr"), dll = r.uint<uint8_t>("dll"),
                dlm = r.uint<uint8_t>("dlm");
  const bool overrun = r.boolean("overrun"), thr = r.boolean("thr_ipending");
  const uint8_t delta = r.uint<uint8_t>("msr_delta"), inputs = r.uint<uint8_t>("last_msr_inputs");
  const auto& rx = r.bytes("rx");
  if (rx.size() > kFifoSize) fail("{}: {} bytes in the receive FIFO, it holds {}", r.key_path("rx"), rx.size(), kFifoSize);
  if (ier & 0xf0) fail("{}: 0x{:02x} sets reserved bits", r.key_path("ier"), ier);
  if (delta & 0xf0) fail("{}: 0x{:02x} sets bits above 3", r.key_path("msr_delta"), delta);
  std::lock_guard lock(mu_);
  ier_ = ier, lcr_ = lcr, mcr_ = mcr, scr_ = scr, fcr_ = fcr, dll_ = dll, dlm_ = dlm;
  overrun_ = overrun, thr_ipending_ = thr, msr_delta_ = delta, last_msr_inputs_ = inputs;
  rx_.assign(rx.begin(), rx.end());
  rx_was_full_ = false;
  update_irq();
}

// ---- CMOS RTC

json CmosRtc::save_state() {
  std::lock_guard lock(mu_);
  return {{"index", index_},
          {"nmi_disabled", nmi_disabled_},
          {"offset", offset_},
          {"ram", json::binary(std::vector<uint8_t>(ram_, ram_ + sizeof ram_))}};
}

void CmosRtc::restore_state(JsonReader& r, uint32_t) {
  const uint8_t index = r.uint<uint8_t>("index");
  const bool nmi = r.boolean("nmi_disabled");
  const int64_t offset = r.i64("offset");
  // Roughly +-10000 years: anything beyond is not a clock offset, and would overflow time_t arithmetic.
  if (offset > (int64_t{1} << 38) || offset < -(int64_t{1} << 38)) fail("{}: {} is out of range", r.key_path("offset"), offset);
  const auto& ram = r.bytes("ram", sizeof ram_);
  if (index & 0x80) fail("{}: 0x{:02x} is not a CMOS index", r.key_path("index"), index);
  std::lock_guard lock(mu_);
  index_ = index, nmi_disabled_ = nmi, offset_ = offset;
  std::copy(ram.begin(), ram.end(), ram_);
}

// ---- i8042

json I8042::save_state() {
  std::lock_guard lock(mu_);
  return {{"out", out_ ? json(*out_) : json()}, {"command_byte", command_byte_}, {"pending", pending_}};
}

void I8042::restore_state(JsonReader& r, uint32_t) {
  std::optional<uint8_t> out;
  if (r.has("out")) out = r.uint<uint8_t>("out");
  else r.skip("out");
  const uint8_t cb = r.uint<uint8_t>("command_byte"), pending = r.uint<uint8_t>("pending");
  if (pending != 0 && pending != 0x60 && (pending < 0xD1 || pending > 0xD4))
    fail("{}: 0x{:02x} is not a command that takes a data byte", r.key_path("pending"), pending);
  std::lock_guard lock(mu_);
  out_ = out, command_byte_ = cb, pending_ = pending;
}

}  // namespace vireo
