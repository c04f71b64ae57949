#include "block/formats.h"

#include "block/format.h"
#include "block/luks.h"
#include "block/luks_image.h"
#include "block/simple_formats.h"
#include "block/vhdx.h"
#include "block/vmdk.h"
#include "common/error.h"

namespace vireo::block {

bool is_foreign_format(const std::string& fmt) {
  return fmt == "luks" || fmt == "vmdk" || fmt == "vhdx" || fmt == "vpc" || fmt == "vdi" || fmt == "qed";
}

namespace {

template <bool (*P)(std::span<const uint8_t>)>
int score(std::span<const uint8_t> head, const std::string&) {
  return P(head) ? 100 : 0;
}

template <std::unique_ptr<BlockImage> (*O)(const std::string&, const OpenOptions&)>
std::unique_ptr<BlockImage> open_with(const std::string& path, const OpenOptions& o, OpenContext& ctx) {
  if (o.force_share && !o.read_only) fail("force-share=on can only be used with read-only images");
  ForeignOpenScope scope(ctx);
  return O(path, o);
}

[[noreturn]] void no_create(const std::string&, const CreateOptions& c) {
  fail("Creating {} images is not supported by this build", c.format);
}

}  // namespace

// The OpenContext of the open in progress on this thread, so a foreign image's backing file joins its chain.
thread_local OpenContext* ForeignOpenScope::current = nullptr;

const FormatDriver kLuksDriver = {"luks", score<luks::probe>, open_with<open_luks>, create_luks};
const FormatDriver kVmdkDriver = {"vmdk", score<vmdk::probe>, open_with<vmdk::open>, vmdk::create};
const FormatDriver kVhdxDriver = {"vhdx", score<vhdx::probe>, open_with<vhdx::open>, vhdx::create};
const FormatDriver kVpcDriver = {"vpc", score<probe_vpc>, open_with<open_vpc>, no_create};
const FormatDriver kVdiDriver = {"vdi", score<probe_vdi>, open_with<open_vdi>, no_create};
const FormatDriver kQedDriver = {"qed", score<probe_qed>, open_with<open_qed>, no_create};

}  // namespace vireo::block
