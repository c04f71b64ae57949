#include "devices/rtc.h"

namespace vireo {

namespace {
constexpr uint8_t kSec = 0x00, kMin = 0x02, kHour = 0x04, kWday = 0x06, kMday = 0x07, kMonth = 0x08, kYear = 0x09,
                  kStatusA = 0x0a, kStatusB = 0x0b, kStatusC = 0x0c, kStatusD = 0x0d, kCentury = 0x32;
constexpr uint8_t kBBinary = 0x04, kB24h = 0x02, kBSet = 0x80;
}  // namespace

CmosRtc::CmosRtc(Clock clock) : clock_(clock ? std::move(clock) : Clock([] { return ::time(nullptr); })) {
  ram_[kStatusA] = 0x26;           // 32.768 kHz time base, 1024 Hz rate
  ram_[kStatusB] = kB24h;          // 24-hour, BCD
  ram_[kStatusD] = 0x80;           // valid RAM and time
}

bool CmosRtc::nmi_disabled() const {
  std::lock_guard lock(mu_);
  return nmi_disabled_;
}

void CmosRtc::set_ram(uint8_t index, uint8_t value) {
  std::lock_guard lock(mu_);
  ram_[index & 0x7f] = value;
}

uint8_t CmosRtc::encode(unsigned v) const {
  if (ram_[kStatusB] & kBBinary) return static_cast<uint8_t>(v);
  return static_cast<uint8_t>(((v / 10) << 4) | (v % 10));
}

unsigned CmosRtc::decode(uint8_t v) const {
  if (ram_[kStatusB] & kBBinary) return v;
  return ((v >> 4) & 0x0f) * 10u + (v & 0x0f);
}

uint8_t CmosRtc::read_index(uint8_t idx) {
  const time_t now = clock_() + offset_;
  tm t{};
  gmtime_r(&now, &t);
  switch (idx) {
    case kSec: return encode(static_cast<unsigned>(t.tm_sec));
    case kMin: return encode(static_cast<unsigned>(t.tm_min));
    case kHour: {
      if (ram_[kStatusB] & kB24h) return encode(static_cast<unsigned>(t.tm_hour));
      unsigned h = static_cast<unsigned>(t.tm_hour) % 12;
      if (h == 0) h = 12;
      return static_cast<uint8_t>(encode(h) | (t.tm_hour >= 12 ? 0x80 : 0));
    }
    case kWday: return encode(static_cast<unsigned>(t.tm_wday) + 1);
    case kMday: return encode(static_cast<unsigned>(t.tm_mday));
    case kMonth: return encode(static_cast<unsigned>(t.tm_mon) + 1);
    case kYear: return encode(static_cast<unsigned>(t.tm_year + 1900) % 100);
    case kCentury: return encode(static_cast<unsigned>(t.tm_year + 1900) / 100);
    case kStatusA: return ram_[kStatusA] & 0x7f;  // UIP never set: reads are always consistent
    case kStatusC: return 0;
    case kStatusD: return 0x80;
    default: return ram_[idx];
  }
}

void CmosRtc::write_index(uint8_t idx, uint8_t v) {
  switch (idx) {
    case kSec: case kMin: case kHour: case kMday: case kMonth: case kYear: case kCentury: {
      const time_t host = clock_();
      const time_t now = host + offset_;
      tm t{};
      gmtime_r(&now, &t);
      unsigned val;
      if (idx == kHour && !(ram_[kStatusB] & kB24h)) {
        const bool pm = v & 0x80;
        unsigned h = decode(static_cast<uint8_t>(v & 0x7f)) % 12;
        val = h + (pm ? 12 : 0);
      } else {
        val = decode(v);
      }
      const int iv = static_cast<int>(val);
      switch (idx) {
        case kSec: t.tm_sec = iv; break;
        case kMin: t.tm_min = iv; break;
        case kHour: t.tm_hour = iv; break;
        case kMday: t.tm_mday = iv; break;
        case kMonth: t.tm_mon = iv - 1; break;
        case kYear: t.tm_year = (t.tm_year + 1900) / 100 * 100 + iv - 1900; break;
        case kCentury: t.tm_year = iv * 100 + (t.tm_year + 1900) % 100 - 1900; break;
        default: break;
      }
      const time_t set = timegm(&t);
      if (set != static_cast<time_t>(-1)) offset_ = static_cast<int64_t>(set) - static_cast<int64_t>(host);
      break;
    }
    case kWday: break;  // derived from the date
    case kStatusA: ram_[kStatusA] = v & 0x7f; break;
    case kStatusB: ram_[kStatusB] = v; break;  // SET (bit 7) is stored; time keeps running
    case kStatusC: case kStatusD: break;  // read-only
    default: ram_[idx] = v; break;
  }
}

void CmosRtc::read(uint64_t offset, std::span<uint8_t> data) {
  std::lock_guard lock(mu_);
  for (auto& b : data) b = 0xff;
  if (data.empty()) return;
  if (offset == 1) data[0] = read_index(index_);
  else if (offset == 0) data[0] = 0xff;  // the index register is write-only
}

void CmosRtc::write(uint64_t offset, std::span<const uint8_t> data) {
  if (data.empty()) return;
  std::lock_guard lock(mu_);
  if (offset == 0) {
    nmi_disabled_ = data[0] & 0x80;
    index_ = data[0] & 0x7f;
  } else if (offset == 1) {
    write_index(index_, data[0]);
  }
}

}  // namespace vireo
