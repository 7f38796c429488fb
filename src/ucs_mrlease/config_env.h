/*
 * UCX_MRLEASE_* and UCX_IB_LEASE_* read without UCX's configuration parser.
 *
 * UCX 1.15 changed ucs_config_parser_fill_opts() (a table entry instead of
 * fields and prefixes) and 1.17 added a member to ucs_config_parser_t, so a
 * table compiled against 1.13's headers must not be handed to another
 * release's parser. This reader walks a flat table as compiled here and calls
 * only the parser functions its fields point at (ucs_config_sscanf_bool and
 * the like, whose prototypes are the same in 1.13 .. 1.20).
 *
 * What it does not do, unlike UCX's parser: read ucx.conf files, follow
 * sub-tables, aliases or deprecated fields (refused), mark the variables
 * "used" (so UCX's UCX_WARN_UNUSED_ENV_VARS warning names them; on 1.13 the
 * switch below therefore stays on UCX's parser).
 */
#ifndef UCS_MRLEASE_CONFIG_ENV_H_
#define UCS_MRLEASE_CONFIG_ENV_H_

#include <ucs/config/parser.h>
#include <stdio.h>

/*
 * Which reader fills, releases and prints UCX_MRLEASE_* (engine_config.c) and
 * UCX_IB_LEASE_* (ib_lease_config.c): yes UCX's parser, no the one below.
 * Call it before anything is read. Unless called, the first read decides:
 * UCX's parser if the running libucp is the 1.x series built against.
 */
void ucs_mrlease_config_use_ucx_parser(int yes);
int  ucs_mrlease_config_ucx_parser(void);

/*
 * Fill opts from a flat table: each field from the variable prefix + name if
 * set (even empty), else from its default. A refused value is an error naming
 * the variable, the value and what the field accepts (printed once: a parser
 * that prints its own calls ucs_mrlease_config_error_reported()). With
 * ignore_errors the field takes its default and filling goes on; without,
 * what was filled is released and UCS_ERR_INVALID_PARAM returned. A table
 * with a sub-table, alias or deprecated field: UCS_ERR_UNSUPPORTED.
 */
ucs_status_t ucs_mrlease_config_env_fill(void *opts, const ucs_config_field_t *fields,
                                         const char *prefix, int ignore_errors);
void         ucs_mrlease_config_env_release(void *opts,
                                            const ucs_config_field_t *fields);

/* What UCX 1.13's ucs_config_parser_print_opts() prints with
 * UCS_CONFIG_PRINT_CONFIG | UCS_CONFIG_PRINT_DOC | UCS_CONFIG_PRINT_HEADER. */
void         ucs_mrlease_config_env_print(FILE *stream, const char *title,
                                          const void *opts,
                                          const ucs_config_field_t *fields,
                                          const char *prefix);

/* Values refused in this thread: a parser that has printed its own error
 * counts it here; the reader counts the others. */
void         ucs_mrlease_config_error_reported(void);
unsigned     ucs_mrlease_config_error_count(void);

#endif
