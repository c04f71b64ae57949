// vireo/block: the process-wide table of secrets (qemu's `--object secret,id=ID,...`), looked up by id when an
// encrypted image is opened or created (qcow2 `encrypt.key-secret=ID`, luks `key-secret=ID`).
#pragma once
#include <string>

namespace vireo::block {

// Adds a secret (its final bytes: already read from file=, base64-decoded, decrypted with keyid=).
// Throws Error with qemu's text on a duplicate id.
void add_secret(const std::string& id, std::string data);
// The bytes of secret `id`; throws Error("No secret with id 'ID'").
std::string lookup_secret(const std::string& id);
bool has_secret(const std::string& id);
// Tests only.
void clear_secrets();

}  // namespace vireo::block
