#include "client/tls.h"

#include <fnmatch.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "common/error.h"

namespace vireo::tls {

namespace {

[[noreturn]] void tls_fail(const std::string& what, int rc) {
  throw Error("TLS: " + what + ": " + gnutls_strerror(rc));
}

void global_init() {
  static const int rc = gnutls_global_init();
  if (rc < 0) tls_fail("initialisation failed", rc);
}

gnutls_session_t S(void* p) { return static_cast<gnutls_session_t>(p); }

std::string verify_status_text(unsigned status, gnutls_certificate_type_t type) {
  gnutls_datum_t out{};
  if (gnutls_certificate_verification_status_print(status, type, &out, 0) < 0) return "certificate rejected";
  std::string s(reinterpret_cast<char*>(out.data), out.size);
  gnutls_free(out.data);
  return s;
}

}  // namespace

Credentials::Credentials(const Files& f) : files_(f) {
  global_init();
  for (const auto& [what, path] : {std::pair<const char*, std::string>{"CA certificate", f.ca},
                                   {"certificate", f.cert}, {"private key", f.key}}) {
    if (::access(path.c_str(), R_OK) != 0)
      throw Error(std::string("Cannot access ") + what + " '" + path + "': " + std::strerror(errno));
  }
  gnutls_certificate_credentials_t c;
  int rc = gnutls_certificate_allocate_credentials(&c);
  if (rc < 0) tls_fail("allocating credentials", rc);
  cred_ = c;
  rc = gnutls_certificate_set_x509_trust_file(c, f.ca.c_str(), GNUTLS_X509_FMT_PEM);
  if (rc < 0) tls_fail("loading CA certificate '" + f.ca + "'", rc);
  if (rc == 0) throw Error("TLS: CA certificate '" + f.ca + "' holds no certificate");
  rc = gnutls_certificate_set_x509_key_file(c, f.cert.c_str(), f.key.c_str(), GNUTLS_X509_FMT_PEM);
  if (rc < 0) tls_fail("loading certificate '" + f.cert + "' with key '" + f.key + "'", rc);
}

Credentials::~Credentials() {
  if (cred_) gnutls_certificate_free_credentials(static_cast<gnutls_certificate_credentials_t>(cred_));
}

Session::~Session() {
  if (s_) gnutls_deinit(S(s_));
}

static std::string peer_certificate_dn(gnutls_session_t s) {
  unsigned n = 0;
  const gnutls_datum_t* certs = gnutls_certificate_get_peers(s, &n);
  if (!certs || n == 0) return "";
  gnutls_x509_crt_t crt;
  if (gnutls_x509_crt_init(&crt) < 0) return "";
  std::string dn;
  if (gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) >= 0) {
    size_t len = 0;
    gnutls_x509_crt_get_dn(crt, nullptr, &len);
    std::vector<char> buf(len + 1);
    if (gnutls_x509_crt_get_dn(crt, buf.data(), &len) >= 0) dn.assign(buf.data(), len);
    while (!dn.empty() && dn.back() == '\0') dn.pop_back();
  }
  gnutls_x509_crt_deinit(crt);
  return dn;
}

static void* new_session(unsigned flags, int fd, Credentials& creds) {
  gnutls_session_t s;
  int rc = gnutls_init(&s, flags);
  if (rc < 0) tls_fail("gnutls_init", rc);
  gnutls_set_default_priority(s);
  gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, creds.raw());
  gnutls_transport_set_int(s, fd);
  gnutls_handshake_set_timeout(s, 30000);
  return s;
}

static int handshake(gnutls_session_t s) {
  int rc;
  do {
    rc = gnutls_handshake(s);
  } while (rc < 0 && gnutls_error_is_fatal(rc) == 0);
  return rc;
}

std::unique_ptr<Session> Session::client(UniqueFd sock, std::shared_ptr<Credentials> creds, const std::string& host,
                                         bool verify) {
  std::unique_ptr<Session> ses(new Session);
  ses->sock_ = std::move(sock);
  ses->creds_ = std::move(creds);
  ses->s_ = new_session(GNUTLS_CLIENT, ses->sock_.get(), *ses->creds_);
  gnutls_server_name_set(S(ses->s_), GNUTLS_NAME_DNS, host.data(), host.size());
  int rc = handshake(S(ses->s_));
  if (rc < 0) tls_fail("handshake with '" + host + "' failed", rc);
  if (verify) {
    unsigned status = 0;
    rc = gnutls_certificate_verify_peers3(S(ses->s_), host.c_str(), &status);
    if (rc < 0) tls_fail("verifying the server certificate", rc);
    if (status != 0)
      throw Error("TLS: the server certificate of '" + host + "' failed verification: " +
                  verify_status_text(status, gnutls_certificate_type_get(S(ses->s_))));
  }
  ses->peer_dn_ = peer_certificate_dn(S(ses->s_));
  return ses;
}

std::unique_ptr<Session> Session::server(UniqueFd sock, std::shared_ptr<Credentials> creds) {
  std::unique_ptr<Session> ses(new Session);
  ses->sock_ = std::move(sock);
  ses->creds_ = std::move(creds);
  ses->s_ = new_session(GNUTLS_SERVER, ses->sock_.get(), *ses->creds_);
  // REQUEST rather than REQUIRE: a client without a certificate completes the handshake and is told why
  // it is refused (one clear error) instead of seeing a bare TLS alert.
  gnutls_certificate_server_set_request(S(ses->s_), GNUTLS_CERT_REQUEST);
  // Do not name our CA in the request: a client then sends whatever certificate it has, and a wrong one is
  // reported as such ("issuer is unknown") instead of as a missing one.
  gnutls_certificate_send_x509_rdn_sequence(S(ses->s_), 1);
  int rc = handshake(S(ses->s_));
  if (rc < 0) tls_fail("handshake failed", rc);
  ses->peer_dn_ = peer_certificate_dn(S(ses->s_));
  return ses;
}

std::string Session::verify_client() {
  if (peer_dn_.empty()) return "the client sent no certificate";
  unsigned status = 0;
  int rc = gnutls_certificate_verify_peers2(S(s_), &status);
  if (rc < 0) return std::string("cannot verify the client certificate: ") + gnutls_strerror(rc);
  if (status != 0)
    return "the client certificate failed verification: " + verify_status_text(status, gnutls_certificate_type_get(S(s_)));
  return "";
}

bool Session::write_all(const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n) {
    ssize_t w = gnutls_record_send(S(s_), p, n);
    if (w == GNUTLS_E_AGAIN || w == GNUTLS_E_INTERRUPTED) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

static bool plain_write_all(int fd, const char* p, size_t n) {
  while (n) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

void Session::pump(UniqueFd plain) {
  char buf[16384];
  for (;;) {
    const bool pending = gnutls_record_check_pending(S(s_)) > 0;
    pollfd p[2] = {{sock_.get(), POLLIN, 0}, {plain.get(), POLLIN, 0}};
    if (!pending) {
      if (::poll(p, 2, -1) < 0) {
        if (errno == EINTR) continue;
        break;
      }
    }
    if (pending || p[0].revents) {
      ssize_t n = gnutls_record_recv(S(s_), buf, sizeof buf);
      if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) continue;
      if (n <= 0 || !plain_write_all(plain.get(), buf, static_cast<size_t>(n))) break;
      continue;
    }
    if (p[1].revents) {
      ssize_t n = ::read(plain.get(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        gnutls_bye(S(s_), GNUTLS_SHUT_WR);
        break;
      }
      if (!write_all(buf, static_cast<size_t>(n))) break;
    }
  }
  ::shutdown(sock_.get(), SHUT_RDWR);
}

void Session::finish() {
  gnutls_bye(S(s_), GNUTLS_SHUT_WR);
  char buf[4096];
  for (int i = 0; i < 100; ++i) {
    if (gnutls_record_check_pending(S(s_)) == 0) {
      pollfd p{sock_.get(), POLLIN, 0};
      if (::poll(&p, 1, 2000) <= 0) break;
    }
    ssize_t n = gnutls_record_recv(S(s_), buf, sizeof buf);
    if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) continue;
    if (n <= 0) break;
  }
  ::shutdown(sock_.get(), SHUT_RDWR);
}

void Session::abort() { ::shutdown(sock_.get(), SHUT_RDWR); }

bool dn_allowed(const std::string& dn, const std::vector<std::string>& allowed) {
  for (const auto& pat : allowed)
    if (::fnmatch(pat.c_str(), dn.c_str(), 0) == 0) return true;
  return false;
}

}  // namespace vireo::tls
