/*
 * A configuration reader of our own, for UCX releases whose parser has
 * another ABI than the 1.13 headers this is compiled against (config_env.h).
 */
#define _GNU_SOURCE /* RTLD_DEFAULT */
#include "config_env.h"

#include <ucp/api/ucp_version.h>
#include <ucs/debug/log_def.h>
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

/* Long enough for any UCX_* variable; UCX's parser uses 256 too. */
#define MRL_ENV_NAME_MAX   256
/* The buffers of UCX 1.13's ucs_config_parser_print_field(). */
#define MRL_ENV_VALUE_MAX  128
#define MRL_ENV_SYNTAX_MAX 256
#define MRL_ENV_DOC_WIDTH  10  /* UCS_CONFIG_PARSER_DOCSTR_WIDTH */

/* 1: UCX's parser, 0: ours, -1: not said: the running UCX decides */
static int mrl_config_ucx_parser = -1;

/* Refused values seen in this thread (ucs_mrlease_config_error_count()). */
static __thread unsigned mrl_config_errors;

void ucs_mrlease_config_use_ucx_parser(int yes)
{
    __atomic_store_n(&mrl_config_ucx_parser, !!yes, __ATOMIC_RELEASE);
}

/*
 * Nobody said (mrlease-ctl, a program using the engine directly): UCX's
 * parser if the running UCX is the series built against, asked of libucp
 * (ucp_get_version(), the same since 1.0; libucs has no version call),
 * loaded here if the process has not. Unknown: UCX's parser, as built.
 */
static int mrl_config_ucx_parser_probe(void)
{
    void (*get_version)(unsigned*, unsigned*, unsigned*);
    unsigned major, minor, release;
    void *ucp;

    get_version = (void (*)(unsigned*, unsigned*, unsigned*))
                  dlsym(RTLD_DEFAULT, "ucp_get_version");
    if ((get_version == NULL) &&
        ((ucp = dlopen("libucp.so.0", RTLD_LAZY | RTLD_LOCAL)) != NULL)) {
        get_version = (void (*)(unsigned*, unsigned*, unsigned*))
                      dlsym(ucp, "ucp_get_version");
    }
    if (get_version == NULL) {
        return 1;
    }
    get_version(&major, &minor, &release);
    return (major == UCP_API_MAJOR) && (minor == UCP_API_MINOR);
}

int ucs_mrlease_config_ucx_parser(void)
{
    int yes = __atomic_load_n(&mrl_config_ucx_parser, __ATOMIC_ACQUIRE);

    if (yes < 0) {
        yes = mrl_config_ucx_parser_probe();
        __atomic_store_n(&mrl_config_ucx_parser, yes, __ATOMIC_RELEASE);
    }
    return yes;
}

void ucs_mrlease_config_error_reported(void)
{
    ++mrl_config_errors;
}

unsigned ucs_mrlease_config_error_count(void)
{
    return mrl_config_errors;
}

static int mrl_env_field_is_last(const ucs_config_field_t *field)
{
    return field->name == NULL;
}

/* Only plain fields: their value is one variable, parsed by one function. */
static ucs_status_t mrl_env_check_table(const ucs_config_field_t *fields,
                                        const char *prefix)
{
    const ucs_config_field_t *field;
    const char *what;

    for (field = fields; !mrl_env_field_is_last(field); ++field) {
        if (field->parser.read == ucs_config_sscanf_table) {
            what = "a sub-table";
        } else if (field->dfl_value == NULL) {
            what = "an alias";
        } else if (field->offset == UCS_CONFIG_DEPRECATED_FIELD_OFFSET) {
            what = "deprecated";
        } else if ((strlen(prefix) + strlen(field->name)) >= MRL_ENV_NAME_MAX) {
            what = "too long a name";
        } else {
            continue;
        }
        ucs_error("mrlease: cannot read %s%s without UCX's parser: the field is %s",
                  prefix, field->name, what);
        return UCS_ERR_UNSUPPORTED;
    }
    return UCS_OK;
}

/* 1 if value was taken, 0 if refused (and reported once). */
static int mrl_env_parse(const ucs_config_field_t *field, const char *var,
                         const char *value, void *dest)
{
    char syntax[MRL_ENV_SYNTAX_MAX] = {0};
    unsigned reported               = ucs_mrlease_config_error_count();

    if (field->parser.read(value, dest, field->parser.arg) == 1) {
        return 1;
    }
    if (ucs_mrlease_config_error_count() == reported) {
        field->parser.help(syntax, sizeof(syntax) - 1, field->parser.arg);
        ucs_error("mrlease: %s='%s' is not accepted; accepted: %s", var, value,
                  syntax);
        ucs_mrlease_config_error_reported();
    }
    return 0;
}

static void mrl_env_release_fields(void *opts, const ucs_config_field_t *fields,
                                   const ucs_config_field_t *end)
{
    const ucs_config_field_t *field;

    for (field = fields; field != end; ++field) {
        field->parser.release((char*)opts + field->offset, field->parser.arg);
    }
}

ucs_status_t ucs_mrlease_config_env_fill(void *opts, const ucs_config_field_t *fields,
                                         const char *prefix, int ignore_errors)
{
    const ucs_config_field_t *field;
    char var[MRL_ENV_NAME_MAX];
    const char *value;
    ucs_status_t status;
    void *dest;

    status = mrl_env_check_table(fields, prefix);
    if (status != UCS_OK) {
        return status;
    }

    for (field = fields; !mrl_env_field_is_last(field); ++field) {
        snprintf(var, sizeof(var), "%s%s", prefix, field->name);
        dest  = (char*)opts + field->offset;
        value = getenv(var);
        if ((value != NULL) && mrl_env_parse(field, var, value, dest)) {
            continue;
        }
        if ((value != NULL) && !ignore_errors) {
            mrl_env_release_fields(opts, fields, field);
            return UCS_ERR_INVALID_PARAM;
        }
        /* not set, or refused and ignored: the default */
        if (!mrl_env_parse(field, var, field->dfl_value, dest)) {
            ucs_error("mrlease: the default of %s is refused: the table is wrong",
                      var);
            mrl_env_release_fields(opts, fields, field);
            return UCS_ERR_INVALID_PARAM;
        }
    }
    return UCS_OK;
}

void ucs_mrlease_config_env_release(void *opts, const ucs_config_field_t *fields)
{
    const ucs_config_field_t *end;

    for (end = fields; !mrl_env_field_is_last(end); ++end) {
    }
    mrl_env_release_fields(opts, fields, end);
}

/* The documentation, one "# " line per line (the last one too, even empty). */
static void mrl_env_print_doc(FILE *stream, const char *doc)
{
    const char *nl;

    for (; (nl = strchr(doc, '\n')) != NULL; doc = nl + 1) {
        fprintf(stream, "# %.*s\n", (int)(nl - doc), doc);
    }
    fprintf(stream, "# %s\n", doc);
}

void ucs_mrlease_config_env_print(FILE *stream, const char *title, const void *opts,
                                  const ucs_config_field_t *fields, const char *prefix)
{
    char value[MRL_ENV_VALUE_MAX], syntax[MRL_ENV_SYNTAX_MAX];
    const ucs_config_field_t *field;

    fprintf(stream, "# UCX library configuration file\n");
    fprintf(stream, "# Uncomment to modify values\n");
    fprintf(stream, "\n#\n# %s\n#\n\n", title);

    for (field = fields; !mrl_env_field_is_last(field); ++field) {
        memset(value, 0, sizeof(value));
        memset(syntax, 0, sizeof(syntax));
        field->parser.write(value, sizeof(value) - 2,
                            (const char*)opts + field->offset, field->parser.arg);
        field->parser.help(syntax, sizeof(syntax) - 1, field->parser.arg);

        fprintf(stream, "#\n");
        mrl_env_print_doc(stream, field->doc);
        fprintf(stream, "#\n");
        fprintf(stream, "# %-*s %s\n", MRL_ENV_DOC_WIDTH, "syntax:", syntax);
        fprintf(stream, "#\n");
        fprintf(stream, "%s%s=%s\n\n", prefix, field->name, value);
    }
    fprintf(stream, "\n");
}
