// vireo/client: the byte stream under a Connection, for each kind of URI (uri.h): the local unix socket,
// ssh (`vireo ssh-helper` on the remote side bridges its stdin/stdout to that host's vireod socket, as
// libvirt's virt-ssh-helper does), TLS (tls.h; a pump thread bridges the session to a socketpair) and plain
// TCP. Every transport hands the JSON-RPC layer one plain stream fd.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "client/uri.h"
#include "common/fd.h"

namespace vireo::client {

class Transport {
 public:
  virtual ~Transport() = default;
  // The stream to the daemon (once; the Transport keeps whatever runs behind it alive).
  UniqueFd take_fd() { return std::move(fd_); }
  // Why the stream ended, when the transport knows better than "closed" (for ssh: "cannot reach vireod
  // over ssh on 'HOST': <the last line ssh or the remote helper wrote on stderr>").
  virtual std::string failure_detail() { return ""; }

 protected:
  UniqueFd fd_;
};

// Throws ClientError(kConnect, one line) when the transport cannot be set up.
std::unique_ptr<Transport> open_transport(const Uri& uri, bool readonly);

// The ssh command line for a vireo+ssh URI (exposed for tests).
std::vector<std::string> ssh_argv(const Uri& uri, bool readonly);
// POSIX shell quoting (as Python's shlex.quote).
std::string shell_quote(const std::string& s);
// (cacert, clientcert, clientkey) for a vireo+tls URI: pkipath=, else ~/.pki/vireo (non-root), else
// $VIREO_ROOT/etc/pki/CA/cacert.pem and $VIREO_ROOT/etc/pki/vireo/{clientcert.pem,private/clientkey.pem}.
std::vector<std::string> client_pki_files(const Uri& uri);

// Connects to a unix socket; throws ClientError(kConnect, "Failed to connect socket to 'P': why").
UniqueFd unix_connect_or_throw(const std::string& path);

}  // namespace vireo::client
