/* A small C program using vireo.h: connect to vireod, optionally define a domain from an XML file, list
 * every domain with its state, print one domain's XML, and optionally undefine it again.
 *
 *   vireo-c-example URI [DOMAIN.xml [--undefine]]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vireo.h"

static const char* state_name(int s) {
  switch (s) {
    case VIREO_DOMAIN_RUNNING: return "running";
    case VIREO_DOMAIN_PAUSED: return "paused";
    case VIREO_DOMAIN_SHUTDOWN: return "in shutdown";
    case VIREO_DOMAIN_SHUTOFF: return "shut off";
    case VIREO_DOMAIN_CRASHED: return "crashed";
    default: return "no state";
  }
}

static char* slurp(const char* path) {
  FILE* f = fopen(path, "rb");
  char* buf;
  long n;
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  fseek(f, 0, SEEK_SET);
  buf = malloc((size_t)n + 1);
  if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  if (buf) buf[n] = '\0';
  fclose(f);
  return buf;
}

int main(int argc, char** argv) {
  vireo_conn* conn;
  vireo_domain** doms = NULL;
  vireo_domain* defined = NULL;
  int n, i, rc = 0;

  if (argc < 2) {
    fprintf(stderr, "usage: %s URI [DOMAIN.xml [--undefine]]\n", argv[0]);
    return 2;
  }
  conn = vireo_connect(argv[1]);
  if (!conn) {
    fprintf(stderr, "connect: %s\n", vireo_last_error());
    return 1;
  }
  if (argc >= 3) {
    char* xml = slurp(argv[2]);
    if (!xml) {
      fprintf(stderr, "cannot read %s\n", argv[2]);
      vireo_conn_close(conn);
      return 1;
    }
    defined = vireo_domain_define_xml(conn, xml);
    free(xml);
    if (!defined) {
      fprintf(stderr, "define: %s\n", vireo_last_error());
      vireo_conn_close(conn);
      return 1;
    }
    printf("defined %s %s\n", vireo_domain_get_name(defined), vireo_domain_get_uuid(defined));
  }

  n = vireo_list_domains(conn, 0, &doms);
  if (n < 0) {
    fprintf(stderr, "list: %s\n", vireo_last_error());
    rc = 1;
  }
  for (i = 0; i < n; i++) {
    int state = 0;
    const char* reason = NULL;
    if (vireo_domain_get_state(doms[i], &state, &reason) < 0) {
      fprintf(stderr, "state: %s\n", vireo_last_error());
      rc = 1;
    } else {
      printf("domain %s %s (%s)\n", vireo_domain_get_name(doms[i]), state_name(state), reason);
    }
    vireo_domain_free(doms[i]);
  }
  free(doms);

  if (defined) {
    vireo_domain* again = vireo_domain_lookup_by_uuid(conn, vireo_domain_get_uuid(defined));
    char* xml = again ? vireo_domain_get_xml(again) : NULL;
    if (!xml) {
      fprintf(stderr, "xml: %s\n", vireo_last_error());
      rc = 1;
    } else {
      printf("xml-bytes %s %d\n", strstr(xml, "<domain") ? "ok" : "bad", (int)strlen(xml));
      free(xml);
    }
    vireo_domain_free(again);
    if (vireo_domain_start(defined) < 0) printf("start-error %s\n", vireo_last_error());
    if (argc >= 4 && strcmp(argv[3], "--undefine") == 0) {
      if (vireo_domain_undefine(defined) < 0) {
        fprintf(stderr, "undefine: %s\n", vireo_last_error());
        rc = 1;
      } else {
        printf("undefined %s\n", vireo_domain_get_name(defined));
      }
    }
    vireo_domain_free(defined);
  }
  if (!vireo_domain_lookup_by_name(conn, "no-such-domain")) printf("lookup-error %s\n", vireo_last_error());
  vireo_conn_close(conn);
  return rc;
}
