#include "devices/serial.h"

#include <algorithm>

namespace vireo {

namespace {
// Register offsets
constexpr uint64_t kRbrThr = 0, kIer = 1, kIirFcr = 2, kLcr = 3, kMcr = 4, kLsr = 5, kMsr = 6, kScr = 7;
constexpr uint8_t kLcrDlab = 0x80;
constexpr uint8_t kIerRda = 0x01, kIerThre = 0x02, kIerRls = 0x04, kIerMs = 0x08;
constexpr uint8_t kIirNone = 0x01, kIirRls = 0x06, kIirRda = 0x04, kIirTimeout = 0x0c, kIirThre = 0x02,
                  kIirMs = 0x00, kIirFifo = 0xc0;
constexpr uint8_t kFcrEnable = 0x01, kFcrClearRx = 0x02;
constexpr uint8_t kMcrDtr = 0x01, kMcrRts = 0x02, kMcrOut1 = 0x04, kMcrOut2 = 0x08, kMcrLoop = 0x10;
constexpr uint8_t kLsrDr = 0x01, kLsrOe = 0x02, kLsrThre = 0x20, kLsrTemt = 0x40;
constexpr uint8_t kMsrCts = 0x10, kMsrDsr = 0x20, kMsrRi = 0x40, kMsrDcd = 0x80;
}  // namespace

Serial16550::Serial16550(std::string id, IrqFn irq, OutputFn output)
    : id_(std::move(id)), irq_(std::move(irq)), output_(std::move(output)) {
  last_msr_inputs_ = modem_status() & 0xf0;
}

void Serial16550::set_rx_ready_callback(std::function<void()> fn) {
  std::lock_guard lock(mu_);
  rx_ready_ = std::move(fn);
}

size_t Serial16550::rx_space() const {
  std::lock_guard lock(mu_);
  if (mcr_ & kMcrLoop) return 0;  // the line is disconnected from the outside in loopback
  return rx_.size() >= kFifoSize ? 0 : kFifoSize - rx_.size();
}

bool Serial16550::irq_level() const {
  std::lock_guard lock(mu_);
  return level_;
}

size_t Serial16550::receive(std::span<const uint8_t> bytes) {
  std::lock_guard lock(mu_);
  if (mcr_ & kMcrLoop) {
    rx_was_full_ = true;
    return 0;
  }
  const size_t space = rx_.size() >= kFifoSize ? 0 : kFifoSize - rx_.size();
  const size_t n = std::min(space, bytes.size());
  rx_.insert(rx_.end(), bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n));
  if (n < bytes.size() || rx_.size() >= kFifoSize) rx_was_full_ = true;
  update_irq();
  return n;
}

unsigned Serial16550::trigger_level() const {
  if (!(fcr_ & kFcrEnable)) return 1;
  static constexpr unsigned levels[4] = {1, 4, 8, 14};
  return levels[fcr_ >> 6];
}

uint8_t Serial16550::modem_status() const {
  uint8_t inputs;
  if (mcr_ & kMcrLoop) {
    inputs = 0;
    if (mcr_ & kMcrRts) inputs |= kMsrCts;
    if (mcr_ & kMcrDtr) inputs |= kMsrDsr;
    if (mcr_ & kMcrOut1) inputs |= kMsrRi;
    if (mcr_ & kMcrOut2) inputs |= kMsrDcd;
  } else {
    inputs = kMsrCts | kMsrDsr | kMsrDcd;  // a cable with a terminal that is always ready
  }
  return inputs;
}

uint8_t Serial16550::compute_iir() const {
  const uint8_t fifo = (fcr_ & kFcrEnable) ? kIirFifo : 0;
  if ((ier_ & kIerRls) && overrun_) return kIirRls | fifo;
  if ((ier_ & kIerRda) && !rx_.empty()) {
    if (!(fcr_ & kFcrEnable) || rx_.size() >= trigger_level()) return kIirRda | fifo;
    return kIirTimeout | fifo;
  }
  if ((ier_ & kIerThre) && thr_ipending_) return kIirThre | fifo;
  if ((ier_ & kIerMs) && (msr_delta_ & 0x0f)) return kIirMs | fifo;
  return kIirNone | fifo;
}

void Serial16550::update_irq() {
  const bool level = (compute_iir() & kIirNone) == 0;
  if (level != level_) {
    level_ = level;
    if (irq_) irq_(level);
  }
}

void Serial16550::push_rx(uint8_t v) {
  if (rx_.size() >= kFifoSize) {
    overrun_ = true;
    return;
  }
  rx_.push_back(v);
}

void Serial16550::transmit(uint8_t v) {
  if (mcr_ & kMcrLoop) {
    push_rx(v);
  } else if (output_) {
    output_(std::span<const uint8_t>(&v, 1));
  }
  // Transmission is instantaneous: the THR is empty again, which raises THRE if enabled.
  thr_ipending_ = true;
}

uint8_t Serial16550::read_reg(uint64_t off, bool* rx_freed) {
  switch (off) {
    case kRbrThr: {
      if (lcr_ & kLcrDlab) return dll_;
      if (rx_.empty()) return 0;
      const uint8_t v = rx_.front();
      rx_.pop_front();
      if (rx_was_full_ && rx_.size() < kFifoSize) {
        rx_was_full_ = false;
        *rx_freed = true;
      }
      return v;
    }
    case kIer:
      return (lcr_ & kLcrDlab) ? dlm_ : ier_;
    case kIirFcr: {
      const uint8_t iir = compute_iir();
      if ((iir & 0x0f) == kIirThre) thr_ipending_ = false;  // reading IIR acknowledges THRE
      return iir;
    }
    case kLcr:
      return lcr_;
    case kMcr:
      return mcr_;
    case kLsr: {
      uint8_t v = kLsrThre | kLsrTemt;
      if (!rx_.empty()) v |= kLsrDr;
      if (overrun_) v |= kLsrOe;
      overrun_ = false;
      return v;
    }
    case kMsr: {
      const uint8_t v = static_cast<uint8_t>(modem_status() | (msr_delta_ & 0x0f));
      msr_delta_ = 0;
      return v;
    }
    case kScr:
      return scr_;
    default:
      return 0xff;
  }
}

void Serial16550::write_reg(uint64_t off, uint8_t v) {
  switch (off) {
    case kRbrThr:
      if (lcr_ & kLcrDlab) {
        dll_ = v;
      } else {
        thr_ipending_ = false;
        transmit(v);
      }
      break;
    case kIer:
      if (lcr_ & kLcrDlab) {
        dlm_ = v;
      } else {
        const bool thre_enabled_now = !(ier_ & kIerThre) && (v & kIerThre);
        ier_ = v & 0x0f;
        // Enabling the THRE interrupt while the THR is empty raises it (16550 behaviour Linux relies on).
        if (thre_enabled_now) thr_ipending_ = true;
      }
      break;
    case kIirFcr:
      if (v & kFcrClearRx) {
        if (rx_was_full_) rx_was_full_ = false;
        rx_.clear();
      }
      fcr_ = v & 0xc9;  // keep enable, DMA mode and trigger bits
      break;
    case kLcr:
      lcr_ = v;
      break;
    case kMcr: {
      mcr_ = v & 0x1f;
      const uint8_t inputs = modem_status() & 0xf0;
      const uint8_t changed = inputs ^ last_msr_inputs_;
      if (changed & kMsrCts) msr_delta_ |= 0x01;
      if (changed & kMsrDsr) msr_delta_ |= 0x02;
      if ((last_msr_inputs_ & kMsrRi) && !(inputs & kMsrRi)) msr_delta_ |= 0x04;  // trailing edge of RI
      if (changed & kMsrDcd) msr_delta_ |= 0x08;
      last_msr_inputs_ = inputs;
      break;
    }
    case kLsr:
    case kMsr:
      break;  // read-only (factory test registers)
    case kScr:
      scr_ = v;
      break;
    default:
      break;
  }
}

void Serial16550::read(uint64_t offset, std::span<uint8_t> data) {
  bool rx_freed = false;
  std::function<void()> ready;
  {
    std::lock_guard lock(mu_);
    // Wider accesses read consecutive registers (a guest may use inw/inl); offsets past 7 read 0xff.
    for (size_t i = 0; i < data.size(); ++i) data[i] = read_reg(offset + i, &rx_freed);
    update_irq();
    if (rx_freed) ready = rx_ready_;
  }
  if (ready) ready();
}

void Serial16550::write(uint64_t offset, std::span<const uint8_t> data) {
  std::lock_guard lock(mu_);
  for (size_t i = 0; i < data.size(); ++i) write_reg(offset + i, data[i]);
  update_irq();
}

}  // namespace vireo
