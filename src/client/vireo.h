/* vireo.h: the C API of the Vireo management client (talks to vireod).
 *
 * Handles are opaque. Functions returning pointers return NULL on failure; functions returning int return
 * 0 on success and -1 on failure. After a failure, vireo_last_error() (per thread) says why, in the same
 * words the `vireo` CLI prints ("Domain not found: no domain with matching name 'x'"). */
#ifndef VIREO_H
#define VIREO_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vireo_conn vireo_conn;
typedef struct vireo_domain vireo_domain;

/* Domain states (libvirt's numbering). */
enum vireo_domain_state {
  VIREO_DOMAIN_NOSTATE = 0,
  VIREO_DOMAIN_RUNNING = 1,
  VIREO_DOMAIN_BLOCKED = 2,
  VIREO_DOMAIN_PAUSED = 3,
  VIREO_DOMAIN_SHUTDOWN = 4, /* in shutdown */
  VIREO_DOMAIN_SHUTOFF = 5,
  VIREO_DOMAIN_CRASHED = 6
};

/* vireo_list_domains flags (0 = every domain). */
#define VIREO_LIST_ACTIVE 1u
#define VIREO_LIST_INACTIVE 2u

/* uri: NULL or "" for the local daemon ($VIREO_ROOT/run/vireo/vireod.sock), "unix:///path", or a remote URI:
 * "vireo+ssh://[user@]host[:port]/", "vireo+tls://host[:port]/", "vireo+tcp://host[:port]/" (docs/remote.md). */
vireo_conn* vireo_connect(const char* uri);
/* A read-only connection: queries only (locally through the read-only socket, $VIREO_ROOT/run/vireo/vireod-ro.sock). */
vireo_conn* vireo_connect_readonly(const char* uri);
void vireo_conn_close(vireo_conn* conn);
const char* vireo_last_error(void);

vireo_domain* vireo_domain_lookup_by_name(vireo_conn* conn, const char* name);
vireo_domain* vireo_domain_lookup_by_uuid(vireo_conn* conn, const char* uuid);
vireo_domain* vireo_domain_define_xml(vireo_conn* conn, const char* xml);
vireo_domain* vireo_domain_create_xml(vireo_conn* conn, const char* xml); /* transient, started */
void vireo_domain_free(vireo_domain* dom);

const char* vireo_domain_get_name(const vireo_domain* dom);
const char* vireo_domain_get_uuid(const vireo_domain* dom);
int vireo_domain_get_id(const vireo_domain* dom); /* as of lookup/list; -1 when not running */
/* Current state from the daemon; *reason (may be NULL) receives a static string like "booted". */
int vireo_domain_get_state(vireo_domain* dom, int* state, const char** reason);
/* The domain XML; free() the result. */
char* vireo_domain_get_xml(vireo_domain* dom);

int vireo_domain_undefine(vireo_domain* dom);
int vireo_domain_start(vireo_domain* dom);
int vireo_domain_shutdown(vireo_domain* dom);
int vireo_domain_reboot(vireo_domain* dom);
int vireo_domain_destroy(vireo_domain* dom);
int vireo_domain_suspend(vireo_domain* dom);
int vireo_domain_resume(vireo_domain* dom);
int vireo_domain_set_autostart(vireo_domain* dom, int enable);

/* Fills *domains with a malloc'ed array of handles (free each with vireo_domain_free, the array with free());
 * returns the count or -1. */
int vireo_list_domains(vireo_conn* conn, unsigned flags, vireo_domain*** domains);

#ifdef __cplusplus
}
#endif
#endif
