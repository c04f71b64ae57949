#include "block/formats.h"

#include "block/luks.h"
#include "block/luks_image.h"
#include "block/simple_formats.h"
#include "block/vhdx.h"
#include "block/vmdk.h"
#include "common/error.h"

namespace vireo::block {

std::optional<std::string> probe_foreign(std::span<const uint8_t> head) {
  if (luks::probe(head)) return "luks";
  if (vmdk::probe(head)) return "vmdk";
  if (vhdx::probe(head)) return "vhdx";
  if (probe_vpc(head)) return "vpc";
  if (probe_vdi(head)) return "vdi";
  if (probe_qed(head)) return "qed";
  return std::nullopt;
}

bool is_foreign_format(const std::string& fmt) {
  return fmt == "luks" || fmt == "vmdk" || fmt == "vhdx" || fmt == "vpc" || fmt == "vdi" || fmt == "qed";
}

std::unique_ptr<BlockImage> open_foreign(const std::string& fmt, const std::string& path, const OpenOptions& o) {
  if (o.force_share && !o.read_only) fail("force-share=on can only be used with read-only images");
  if (fmt == "luks") return open_luks(path, o);
  if (fmt == "vmdk") return vmdk::open(path, o);
  if (fmt == "vhdx") return vhdx::open(path, o);
  if (fmt == "vpc") return open_vpc(path, o);
  if (fmt == "vdi") return open_vdi(path, o);
  if (fmt == "qed") return open_qed(path, o);
  fail("Unknown driver '{}'", fmt);
}

void create_foreign(const std::string& path, const CreateOptions& c) {
  if (c.format == "luks") return create_luks(path, c);
  if (c.format == "vmdk") return vmdk::create(path, c);
  if (c.format == "vhdx") return vhdx::create(path, c);
  fail("Creating {} images is not supported by this build", c.format);
}

}  // namespace vireo::block
