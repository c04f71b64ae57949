// Client library pieces that need no daemon: URIs, default socket, line framing.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "client/client.h"
#include "client/vireo.h"
#include "client/wire.h"

using namespace vireo::client;

TEST(Uri, SocketPaths) {
  ::setenv("VIREO_ROOT", "/srv/v/", 1);
  EXPECT_EQ(default_socket_path(), "/srv/v/run/vireo/vireod.sock");
  EXPECT_EQ(default_socket_path(true), "/srv/v/run/vireo/vireod-ro.sock");
  EXPECT_EQ(socket_from_uri(""), "/srv/v/run/vireo/vireod.sock");
  ::unsetenv("VIREO_ROOT");
  EXPECT_EQ(default_socket_path(), "/run/vireo/vireod.sock");
  EXPECT_EQ(socket_from_uri("unix:///tmp/x.sock"), "/tmp/x.sock");
  EXPECT_EQ(socket_from_uri("unix:/tmp/x.sock"), "/tmp/x.sock");
  EXPECT_EQ(socket_from_uri("qemu:///system"), "/run/vireo/vireod.sock");  // libvirt programs' local URI
  EXPECT_THROW(socket_from_uri("vireo+ssh://host/"), ClientError);
  EXPECT_THROW(socket_from_uri("unix://relative"), ClientError);
}

TEST(Wire, LinesSplitAndReassemble) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  LineChannel a{vireo::UniqueFd(sv[0])}, b{vireo::UniqueFd(sv[1])};
  ASSERT_TRUE(a.write_line("{\"x\":1}"));
  ASSERT_EQ(::send(sv[0], "par", 3, 0), 3);
  ASSERT_EQ(::send(sv[0], "tial\nrest", 9, 0), 9);
  EXPECT_EQ(b.read_line(1000), "{\"x\":1}");
  EXPECT_EQ(b.read_line(1000), "partial");
  EXPECT_FALSE(b.read_line(50).has_value());  // "rest" has no newline yet: timeout
  EXPECT_EQ(b.take_buffered(), "rest");
  // Over-long lines are refused, not buffered forever.
  std::string big(100, 'a');
  ASSERT_TRUE(a.write_line(big));
  EXPECT_FALSE(b.read_line(1000, 10).has_value());
}

TEST(CApi, ConnectFailureSetsLastError) {
  EXPECT_EQ(vireo_connect("unix:///nonexistent/vireod.sock"), nullptr);
  EXPECT_STREQ(vireo_last_error(), "Failed to connect socket to '/nonexistent/vireod.sock': No such file or directory");
  EXPECT_EQ(vireo_domain_start(nullptr), -1);
  EXPECT_STREQ(vireo_last_error(), "invalid argument: domain is NULL");
  EXPECT_EQ(vireo_domain_lookup_by_name(nullptr, "x"), nullptr);
}

// The URI grammar shared with the Python binding (python/vireo/_uri.py reads the same file).
TEST(Uri, SharedVectors) {
  std::ifstream f(VIREO_SOURCE_DIR "/tests/data/uris.json");
  ASSERT_TRUE(f);
  auto vectors = nlohmann::json::parse(f);
  ASSERT_GT(vectors.size(), 10u);
  const char* kinds[] = {"unix", "ssh", "tls", "tcp"};
  for (const auto& v : vectors) {
    const std::string uri = v["uri"];
    SCOPED_TRACE(uri);
    if (v.contains("error")) {
      try {
        parse_uri(uri);
        ADD_FAILURE() << "accepted";
      } catch (const ClientError& e) {
        EXPECT_EQ(e.what(), v["error"].get<std::string>());
        EXPECT_EQ(e.code(), ClientError::kConnect);
      }
      continue;
    }
    Uri u = parse_uri(uri);
    EXPECT_EQ(kinds[static_cast<int>(u.kind)], v["kind"].get<std::string>());
    if (v.contains("socket")) {
      EXPECT_EQ(u.socket, v["socket"].get<std::string>());
    }
    if (v.contains("host")) {
      EXPECT_EQ(u.host, v["host"].get<std::string>());
    }
    if (v.contains("port")) {
      EXPECT_EQ(u.port, v["port"].get<int>());
    }
    if (v.contains("user")) {
      EXPECT_EQ(u.user, v["user"].get<std::string>());
    }
    if (v.contains("text")) {
      EXPECT_EQ(u.text, v["text"].get<std::string>());
    }
    if (v.contains("params")) {
      EXPECT_EQ(nlohmann::json(u.params), v["params"]);
    }
  }
}

TEST(Uri, SshCommandLine) {
  Uri u = parse_uri("vireo+ssh://admin@host:2200/?keyfile=/k/id&no_verify=1&known_hosts=/kh&socket=/run/x y.sock&no_tty=1");
  auto a = ssh_argv(u, true);
  std::vector<std::string> want{"ssh", "-p", "2200", "-l", "admin", "-i", "/k/id", "-T", "-e", "none",
                                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/kh", "-o", "BatchMode=yes",
                                "--", "host", "vireo ssh-helper --readonly --socket '/run/x y.sock'"};
  EXPECT_EQ(a, want);
  EXPECT_EQ(shell_quote("it's"), "'it'\"'\"'s'");
  EXPECT_EQ(shell_quote(""), "''");
  u = parse_uri("vireo+ssh://h/?command=/opt/ssh&helper=/opt/vireo");
  a = ssh_argv(u, false);
  EXPECT_EQ(a.front(), "/opt/ssh");
  EXPECT_EQ(a.back(), "/opt/vireo ssh-helper");
}

TEST(Uri, PkiFiles) {
  ::setenv("VIREO_ROOT", "/srv/r", 1);
  auto f = client_pki_files(parse_uri("vireo+tls://h/"));
  EXPECT_EQ(f, (std::vector<std::string>{"/srv/r/etc/pki/CA/cacert.pem", "/srv/r/etc/pki/vireo/clientcert.pem",
                                          "/srv/r/etc/pki/vireo/private/clientkey.pem"}));
  f = client_pki_files(parse_uri("vireo+tls://h/?pkipath=/p"));
  EXPECT_EQ(f, (std::vector<std::string>{"/p/cacert.pem", "/p/clientcert.pem", "/p/clientkey.pem"}));
  ::unsetenv("VIREO_ROOT");
}

TEST(Uri, ConnectFailuresAreOneLine) {
  try {
    Connection c("vireo+tcp://127.0.0.1:1/");
    ADD_FAILURE();
  } catch (const ClientError& e) {
    EXPECT_EQ(std::string(e.what()), "unable to connect to server at '127.0.0.1:1': Connection refused");
  }
  try {
    Connection c("vireo+tls://127.0.0.1:1/?pkipath=/nonexistent");
    ADD_FAILURE();
  } catch (const ClientError& e) {
    EXPECT_EQ(std::string(e.what()), "Cannot access CA certificate '/nonexistent/cacert.pem': No such file or directory");
  }
  try {
    Connection c("vireo+ssh://h/?command=/nonexistent/ssh");
    ADD_FAILURE();
  } catch (const ClientError& e) {
    EXPECT_EQ(std::string(e.what()), "cannot run /nonexistent/ssh: No such file or directory");
  }
}

TEST(CApi, ReadOnlyConnectFailureNamesTheReadOnlySocket) {
  ::setenv("VIREO_ROOT", "/nonexistent", 1);
  EXPECT_EQ(vireo_connect_readonly(nullptr), nullptr);
  EXPECT_STREQ(vireo_last_error(), "Failed to connect socket to '/nonexistent/run/vireo/vireod-ro.sock': No such file or directory");
  ::unsetenv("VIREO_ROOT");
}
