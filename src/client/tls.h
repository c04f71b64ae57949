// vireo/client: TLS sessions with GnuTLS for vireo+tls:// (client side) and vireod --listen (server side):
// x509 both ways (the client checks the server's certificate and host name against the CA, the server
// requires a client certificate signed by the same CA and hands its DN to the allow-list), and a pump that
// bridges a TLS session to a plain socket so the JSON-RPC code above never sees TLS.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "common/fd.h"

namespace vireo::tls {

// The certificate files in libvirt's layout: CA, our certificate, our private key.
struct Files {
  std::string ca, cert, key;
};

// Loaded credentials, shareable between sessions (a server loads them once).
class Credentials {
 public:
  explicit Credentials(const Files& f);  // throws vireo::Error naming the file and the problem
  ~Credentials();
  Credentials(const Credentials&) = delete;
  Credentials& operator=(const Credentials&) = delete;
  void* raw() const { return cred_; }
  const Files& files() const { return files_; }

 private:
  Files files_;
  void* cred_ = nullptr;
};

class Session {
 public:
  // Handshake as a client on a connected socket; when verify, the server's certificate must chain to the CA
  // and name `host`. Throws vireo::Error ("TLS: ...") on failure.
  static std::unique_ptr<Session> client(UniqueFd sock, std::shared_ptr<Credentials> creds, const std::string& host,
                                         bool verify);
  // Handshake as a server, asking for a client certificate; then verify_client() says whether it is good.
  static std::unique_ptr<Session> server(UniqueFd sock, std::shared_ptr<Credentials> creds);
  // "" when the client presented a certificate that chains to the CA (and is in date); else why not.
  std::string verify_client();
  ~Session();

  // The peer certificate's distinguished name in libvirt's form ("C=GB,O=Example,CN=client").
  const std::string& peer_dn() const { return peer_dn_; }
  // Copies bytes both ways between the session and `plain` until either side ends (then closes both).
  void pump(UniqueFd plain);
  bool write_all(const void* data, size_t n);
  // Ends our side (close_notify), then discards what the peer still sends until it closes (at most 2 s),
  // so a last message is read rather than lost to a reset.
  void finish();
  // Cuts the underlying connection (a blocked pump returns).
  void abort();

 private:
  Session() = default;
  UniqueFd sock_;
  std::shared_ptr<Credentials> creds_;
  void* s_ = nullptr;
  std::string peer_dn_;
};

// Does `dn` match any pattern of `allowed` (fnmatch wildcards, as libvirt's tls_allowed_dn_list)?
bool dn_allowed(const std::string& dn, const std::vector<std::string>& allowed);

}  // namespace vireo::tls
