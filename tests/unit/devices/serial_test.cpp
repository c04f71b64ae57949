// 16550A behaviour through the PIO bus, as a guest driver sees it.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "devices/bus.h"
#include "devices/serial.h"

namespace vireo {
namespace {

constexpr uint64_t B = Serial16550::kCom1Base;
enum : uint64_t { THR = 0, RBR = 0, IER = 1, IIR = 2, FCR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7 };

struct Uart {
  Bus bus{"pio"};
  std::string out;
  std::vector<bool> irq_edges;
  std::shared_ptr<Serial16550> dev;
  Uart() {
    dev = std::make_shared<Serial16550>(
        "serial0", [this](bool l) { irq_edges.push_back(l); },
        [this](std::span<const uint8_t> b) { out.append(b.begin(), b.end()); });
    bus.insert(B, 8, dev);
  }
  uint8_t in(uint64_t reg) {
    uint8_t v = 0;
    EXPECT_TRUE(bus.read(B + reg, std::span<uint8_t>(&v, 1)));
    return v;
  }
  void outb(uint64_t reg, uint8_t v) { EXPECT_TRUE(bus.write(B + reg, std::span<const uint8_t>(&v, 1))); }
  void feed(const std::string& s) {
    dev->receive(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
  }
};

TEST(Serial, TransmitGoesToOutputAndLsrShowsEmpty) {
  Uart u;
  for (char c : std::string("hi\n")) u.outb(THR, static_cast<uint8_t>(c));
  EXPECT_EQ(u.out, "hi\n");
  EXPECT_EQ(u.in(LSR) & 0x60, 0x60);  // THRE | TEMT
  EXPECT_EQ(u.in(LSR) & 0x01, 0);     // no data
  EXPECT_TRUE(u.irq_edges.empty());   // IER = 0: no interrupt
}

TEST(Serial, DlabSelectsDivisorLatch) {
  Uart u;
  u.outb(LCR, 0x83);  // DLAB, 8N1
  u.outb(0, 0x01);    // DLL: 115200 baud
  u.outb(1, 0x00);    // DLM
  EXPECT_EQ(u.in(0), 0x01);
  EXPECT_EQ(u.in(1), 0x00);
  u.outb(LCR, 0x03);
  EXPECT_EQ(u.in(LCR), 0x03);
  EXPECT_EQ(u.in(IER), 0x00);  // IER untouched by the DLM write
  u.outb(THR, 'x');
  EXPECT_EQ(u.out, "x");  // with DLAB clear, offset 0 is THR again
}

TEST(Serial, ScratchRegisterHoldsValue) {
  Uart u;
  u.outb(SCR, 0xa5);
  EXPECT_EQ(u.in(SCR), 0xa5);
}

TEST(Serial, ReceiveRaisesRdaInterruptPerIer) {
  Uart u;
  u.feed("a");
  EXPECT_TRUE(u.irq_edges.empty());  // RDA interrupt disabled
  EXPECT_EQ(u.in(LSR) & 0x01, 0x01);
  EXPECT_EQ(u.in(IIR) & 0x0f, 0x01);  // nothing pending (masked)
  u.outb(IER, 0x01);
  ASSERT_EQ(u.irq_edges.size(), 1u);
  EXPECT_TRUE(u.irq_edges.back());
  EXPECT_EQ(u.in(IIR) & 0x0f, 0x04);
  EXPECT_EQ(u.in(RBR), 'a');
  EXPECT_FALSE(u.irq_edges.back());  // line dropped once the FIFO is empty
  EXPECT_EQ(u.in(IIR) & 0x0f, 0x01);
  EXPECT_EQ(u.in(LSR) & 0x01, 0x00);
}

TEST(Serial, ThreInterruptRaisedWhenEnabledAndClearedByIirRead) {
  Uart u;
  u.outb(IER, 0x02);  // enabling ETBEI with an empty THR raises THRE
  ASSERT_FALSE(u.irq_edges.empty());
  EXPECT_TRUE(u.irq_edges.back());
  EXPECT_EQ(u.in(IIR) & 0x0f, 0x02);  // reading IIR acknowledges it
  EXPECT_FALSE(u.irq_edges.back());
  EXPECT_EQ(u.in(IIR) & 0x0f, 0x01);
  u.outb(THR, 'z');  // after transmission the THR is empty again: THRE once more
  EXPECT_TRUE(u.irq_edges.back());
  EXPECT_EQ(u.out, "z");
}

TEST(Serial, RxHasPriorityOverThre) {
  Uart u;
  u.outb(IER, 0x03);
  u.feed("q");
  EXPECT_EQ(u.in(IIR) & 0x0f, 0x04);
  EXPECT_EQ(u.in(RBR), 'q');
  EXPECT_EQ(u.in(IIR) & 0x0f, 0x02);
}

TEST(Serial, FifoHoldsSixteenBytesAndTriggerLevels) {
  Uart u;
  u.outb(FCR, 0x81);  // FIFO on, trigger 8
  EXPECT_EQ(u.in(IIR) & 0xc0, 0xc0);
  EXPECT_EQ(u.dev->rx_space(), 16u);
  const std::string s = "0123456789abcdefXYZ";
  const size_t taken = u.dev->receive(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
  EXPECT_EQ(taken, 16u);
  EXPECT_EQ(u.dev->rx_space(), 0u);
  u.outb(IER, 0x01);
  EXPECT_EQ(u.in(IIR) & 0x0f, 0x04);  // 16 >= trigger 8
  std::string got;
  for (int i = 0; i < 10; ++i) got += static_cast<char>(u.in(RBR));
  EXPECT_EQ(got, "0123456789");
  EXPECT_EQ(u.in(IIR) & 0x0f, 0x0c);  // 6 left, below the trigger: character timeout
  u.outb(FCR, 0x03);                  // clear RX FIFO
  EXPECT_EQ(u.in(LSR) & 0x01, 0);
  EXPECT_EQ(u.dev->rx_space(), 16u);
}

TEST(Serial, RxReadyCallbackFiresWhenAFullFifoDrains) {
  Uart u;
  int ready = 0;
  u.dev->set_rx_ready_callback([&] { ++ready; });
  u.feed(std::string(20, 'x'));
  EXPECT_EQ(ready, 0);
  u.in(RBR);
  EXPECT_EQ(ready, 1);
  u.in(RBR);
  EXPECT_EQ(ready, 1);  // only once per full episode
}

TEST(Serial, LoopbackRoutesThrToRbrAndModemLines) {
  Uart u;
  u.outb(MCR, 0x10 | 0x0b);  // LOOP | OUT2 | RTS | DTR
  u.outb(THR, 'L');
  EXPECT_TRUE(u.out.empty());  // nothing leaves the UART in loopback
  EXPECT_EQ(u.in(LSR) & 0x01, 0x01);
  EXPECT_EQ(u.in(RBR), 'L');
  const uint8_t msr = u.in(MSR);
  EXPECT_EQ(msr & 0xf0, 0x10 | 0x20 | 0x80);  // CTS=RTS, DSR=DTR, DCD=OUT2, RI=OUT1(0)
  EXPECT_EQ(u.dev->rx_space(), 0u);            // outside input is disconnected
  u.outb(MCR, 0x10 | 0x04);                    // only OUT1 -> RI
  EXPECT_EQ(u.in(MSR) & 0xf0, 0x40);
}

TEST(Serial, LoopbackOverrunSetsLsrOe) {
  Uart u;
  u.outb(MCR, 0x10);
  for (int i = 0; i < 17; ++i) u.outb(THR, static_cast<uint8_t>('a' + i));
  const uint8_t lsr = u.in(LSR);
  EXPECT_EQ(lsr & 0x02, 0x02);
  EXPECT_EQ(u.in(LSR) & 0x02, 0);  // cleared by the read
}

TEST(Serial, ModemStatusNormalAndDeltas) {
  Uart u;
  EXPECT_EQ(u.in(MSR), 0xb0);  // CTS, DSR, DCD of an always-ready terminal
  u.outb(IER, 0x08);
  u.outb(MCR, 0x10);  // loopback with all outputs low: CTS/DSR/DCD drop -> deltas
  EXPECT_EQ(u.in(IIR) & 0x0f, 0x00);  // modem status interrupt
  EXPECT_EQ(u.in(MSR) & 0x0f, 0x0b);
  EXPECT_EQ(u.in(MSR) & 0x0f, 0x00);
}

TEST(Serial, WideAndOutOfRangeAccessesAreSafe) {
  Uart u;
  uint8_t buf[4] = {};
  EXPECT_TRUE(u.bus.read(B + 4, std::span<uint8_t>(buf, 4)));  // MCR, LSR, MSR, SCR
  EXPECT_EQ(buf[1] & 0x60, 0x60);
  EXPECT_FALSE(u.bus.read(B + 6, std::span<uint8_t>(buf, 4)));  // crosses the end: not claimed
  EXPECT_EQ(buf[0], 0xff);
}

}  // namespace
}  // namespace vireo
