#include "img/objects.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <vector>

#include "block/crypto.h"
#include "block/secret.h"
#include "common/error.h"
#include "img/img.h"

namespace vireo::img {

std::string base64_decode(const std::string& in) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0, pad = 0;
  for (char ch : in) {
    int v;
    if (ch >= 'A' && ch <= 'Z') v = ch - 'A';
    else if (ch >= 'a' && ch <= 'z') v = ch - 'a' + 26;
    else if (ch >= '0' && ch <= '9') v = ch - '0' + 52;
    else if (ch == '+') v = 62;
    else if (ch == '/') v = 63;
    else if (ch == '=') {
      ++pad;
      continue;
    } else {
      fail("Base64 data contains invalid characters");
    }
    if (pad) fail("Base64 data contains invalid characters");
    acc = acc << 6 | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  if (pad > 2 || (in.size() % 4) != 0) fail("Base64 data contains invalid characters");
  return out;
}

namespace {

// AES-256-CBC with a 32-byte key secret and a base64 IV; the payload is base64 ciphertext with PKCS#7 padding.
std::string decrypt_secret(const std::string& ciphertext_b64, const std::string& keyid, const std::string& iv_b64) {
  const std::string key = block::lookup_secret(keyid);
  if (key.size() != 32) fail("Key secret '{}' must be 32 bytes long", keyid);
  if (iv_b64.empty()) fail("Missing 'iv' property for secret '{}'", keyid);
  const std::string iv = base64_decode(iv_b64);
  if (iv.size() != 16) fail("IV is {} bytes long, but must be 16", iv.size());
  std::string data = base64_decode(ciphertext_b64);
  if (data.empty() || data.size() % 16) fail("Secret data length must be a multiple of 16");
  block::crypto::Cipher c(block::crypto::CipherAlg::AES256, block::crypto::CipherMode::CBC,
                          std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(key.data()), 32));
  c.decrypt(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(iv.data()), 16),
            std::span<uint8_t>(reinterpret_cast<uint8_t*>(data.data()), data.size()));
  const unsigned padlen = static_cast<unsigned char>(data.back());
  if (padlen == 0 || padlen > 16 || padlen > data.size()) fail("Incorrect number of padding bytes ({}) found on decrypted data", padlen);
  data.resize(data.size() - padlen);
  return data;
}

}  // namespace

void add_object(const std::string& spec) {
  const OptionList ol = parse_option_list(spec);
  std::string type;
  std::map<std::string, std::string> props;
  bool first = true;
  for (const auto& [k, v] : ol.items) {
    if (first && spec.compare(0, k.size() + 1, k + "=") != 0) {
      type = k;   // the implied qom-type ("secret,id=...")
    } else if (k == "qom-type") {
      type = v;
    } else {
      props[k] = v;
    }
    first = false;
  }
  if (type.empty()) fail("Parameter 'qom-type' is missing");
  static const char* kKnown[] = {"authz-list", "authz-list-file", "authz-simple", "main-loop", "pr-manager-helper",
                                 "secret", "secret_keyring", "thread-context", "throttle-group"};
  if (std::none_of(std::begin(kKnown), std::end(kKnown), [&](const char* s) { return type == s; }))
    fail("Parameter 'qom-type' does not accept value '{}'", type);
  if (!props.count("id")) fail("Parameter 'id' is missing");
  if (type != "secret") {
    if (type == "secret_keyring") fail("secret_keyring objects are not supported by {}", prog());
    return;   // objects without effect on image handling
  }
  static const char* kProps[] = {"id", "data", "file", "format", "keyid", "iv"};
  for (const auto& kv : props)
    if (const std::string& k = kv.first; std::none_of(std::begin(kProps), std::end(kProps), [&](const char* s) { return k == s; }))
      fail("Parameter '{}' is unexpected", k);
  const std::string format = props.count("format") ? props["format"] : "raw";
  if (format != "raw" && format != "base64") fail("Parameter 'format' does not accept value '{}'", format);
  const bool has_data = props.count("data"), has_file = props.count("file");
  if (has_data && has_file) fail("'file' and 'data' are mutually exclusive");
  if (!has_data && !has_file) fail("Either 'file' or 'data' must be provided");
  std::string value;
  if (has_data) {
    value = props["data"];
  } else {
    std::ifstream f(props["file"], std::ios::binary);
    if (!f) fail("Unable to read {}: Failed to open file \u201c{}\u201d: {}", props["file"], props["file"], std::strerror(errno));
    std::stringstream ss;
    ss << f.rdbuf();
    value = ss.str();
  }
  if (props.count("keyid")) value = decrypt_secret(value, props["keyid"], props.count("iv") ? props["iv"] : "");
  else if (format == "base64") value = base64_decode(value);
  block::add_secret(props["id"], std::move(value));
}

void add_object_or_die(const std::string& spec) {
  try {
    add_object(spec);
  } catch (const Error& e) {
    die(e.what());
  }
}

}  // namespace vireo::img
