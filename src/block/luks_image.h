// vireo/block: the raw `luks` format (qemu's "luks" driver): a LUKS1 header and key material, then the
// encrypted payload; the virtual disk is the payload. Also the parsing of LUKS create options, shared with
// qcow2 encryption (encrypt.* there).
#pragma once
#include <memory>
#include <string>

#include "block/block.h"
#include "block/luks.h"

namespace vireo::block {

std::unique_ptr<BlockImage> open_luks(const std::string& path, const OpenOptions& opts);
void create_luks(const std::string& path, const CreateOptions& c);

// LUKS creation parameters from -o options named with `prefix` ("" for luks, "encrypt." for qcow2):
// key-secret, cipher-alg, cipher-mode, ivgen-alg, ivgen-hash-alg, hash-alg, iter-time. Unknown options with
// the prefix are left to the caller. Throws qemu's texts ("Parameter 'cipher-alg' does not accept value 'x'",
// "Parameter 'key-secret' is required for cipher", "No secret with id 'x'").
struct LuksCreateRequest {
  luks::CreateParams params;
  std::string password;
};
LuksCreateRequest luks_create_request(const CreateOptions& c, const std::string& prefix);

// The passphrase for opening: opts.key_secret resolved, or nullopt for a no_io open without a secret.
// Throws "Parameter '<prefix>key-secret' is required for cipher" when it is needed and missing.
std::optional<std::string> luks_open_password(const OpenOptions& opts, const std::string& prefix);

}  // namespace vireo::block
