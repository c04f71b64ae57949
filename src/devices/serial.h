// vireo/devices: a 16550A UART (COM1 at I/O 0x3f8, IRQ 4 by default).
//
// Registers (offset from the base): 0 RBR/THR (DLL with LCR.DLAB), 1 IER (DLM with DLAB), 2 IIR/FCR, 3 LCR,
// 4 MCR, 5 LSR, 6 MSR, 7 SCR. 16-byte RX FIFO; transmission is instantaneous (THR is always empty again at
// once, so THRE/TEMT read as 1). Interrupts (level on the IRQ output, recomputed after every access):
// line status (overrun) > received data (FIFO at the trigger level; below it the character-timeout id 0x0c
// is reported at once) > THR empty (per IER; cleared by an IIR read that reports it or a THR write) > modem
// status. MCR loopback routes THR to the RX FIFO and MCR outputs to MSR inputs. As in QEMU, MCR.OUT2 does not
// gate the IRQ output.
//
// Thread safety: guest accesses (vCPU threads) and receive() (the backend's event-loop thread) may race; one
// mutex protects the state. Callbacks run with the mutex held except rx_ready.
#pragma once
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <span>
#include <string>

#include "devices/bus.h"

namespace vireo {

class Serial16550 : public BusDevice {
 public:
  static constexpr uint64_t kCom1Base = 0x3f8;
  static constexpr uint32_t kCom1Irq = 4;
  static constexpr size_t kFifoSize = 16;

  using IrqFn = std::function<void(bool level)>;
  using OutputFn = std::function<void(std::span<const uint8_t>)>;

  Serial16550(std::string id, IrqFn irq, OutputFn output);

  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;
  std::string name() const override { return id_; }

  // Host -> guest. Accepts at most rx_space() bytes (the rest is not taken); returns how many were taken.
  size_t receive(std::span<const uint8_t> bytes);
  size_t rx_space() const;
  // Called (from a vCPU thread, without the device lock) when the guest frees FIFO space after receive()
  // found it full, so the backend can resume reading its input.
  void set_rx_ready_callback(std::function<void()> fn);

  bool irq_level() const;  // current IRQ output (tests)

  // Device (devices/device.h): registers and FIFO contents; restore re-drives the IRQ line.
  uint32_t state_version() const override { return 1; }
  nlohmann::json save_state() override;
  void restore_state(JsonReader& state, uint32_t version) override;

 private:
  uint8_t read_reg(uint64_t off, bool* rx_freed);
  void write_reg(uint64_t off, uint8_t v);
  uint8_t compute_iir() const;
  void update_irq();
  void transmit(uint8_t v);
  void push_rx(uint8_t v);
  uint8_t modem_status() const;
  unsigned trigger_level() const;

  std::string id_;
  IrqFn irq_;
  OutputFn output_;
  std::function<void()> rx_ready_;
  mutable std::mutex mu_;
  std::deque<uint8_t> rx_;
  bool rx_was_full_ = false;
  uint8_t ier_ = 0, lcr_ = 0, mcr_ = 0, scr_ = 0, fcr_ = 0;
  uint8_t dll_ = 0x0c, dlm_ = 0;  // 9600 baud
  bool overrun_ = false;          // LSR.OE, cleared by reading LSR
  bool thr_ipending_ = true;      // THR-empty interrupt condition (cleared by IIR read / THR write)
  uint8_t msr_delta_ = 0;         // MSR bits 0-3
  uint8_t last_msr_inputs_ = 0;
  bool level_ = false;
};

}  // namespace vireo
