/*
 * cli.h - shared command-line plumbing of the dskit tools.
 *
 * Options are data: each tool has one static table of struct ds_opt, which
 * drives parsing, --help, the hidden --list-options (used to generate the
 * shell completions) and, through a test, the man page's OPTIONS section.
 * Every tool gets the common options of DS_OPTS_COMMON.
 *
 * Messages go to stderr as "ds-tool: message" according to the display level
 * (0 nothing, 1 errors, 2 results and warnings (default), 3 progress, 4 info;
 * -v raises, -q lowers). Exit codes: 0 success, 1 failure, 2 usage error
 * (3 is ds-eval's missed threshold).
 */
#ifndef DS_CLI_H
#define DS_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdnoreturn.h>

#include "ds_error.h"

enum { DS_EXIT_OK = 0, DS_EXIT_FAILURE = 1, DS_EXIT_USAGE = 2, DS_EXIT_THRESHOLD = 3 };

/* Ids of the common options; a tool's own ids start at DS_OPT_TOOL. */
enum {
    DS_OPT_END = 0,
    DS_OPT_HELP = 256,
    DS_OPT_VERSION,
    DS_OPT_QUIET,
    DS_OPT_VERBOSE,
    DS_OPT_THREADS,
    DS_OPT_OUTPUT,
    DS_OPT_FORCE,
    DS_OPT_PROGRESS,
    DS_OPT_NO_PROGRESS,
    DS_OPT_LIST_OPTIONS,
    DS_OPT_TOOL = 512
};

struct ds_opt {
    int id;
    char short_name;       /* 0 when none */
    const char *long_name; /* without "--" */
    const char *arg;       /* metavariable ("FILE", "N"); NULL for a flag */
    const char *help;      /* one line */
    const char *def;       /* default shown in --help, or NULL */
    const char *complete;  /* completion hint: "file", "dir", or "a|b|c" choices; NULL */
    bool hidden;           /* not in --help nor completions */
};

/* Common options every tool accepts, in --help order. The tool's table lists
 * its own options; ds_cli_parse appends these. -o/--output and -f/--force are
 * included only for tools with output_file = true. */

struct ds_cli {
    const char *prog;              /* "ds-convert" */
    const char *synopsis;          /* "[options] [INPUT]" */
    const char *summary;           /* one sentence for --help */
    const struct ds_opt *opts;     /* tool table, terminated by {0} */
    bool output_file;              /* tool writes a file: -o and -f */
    const char *exit_status;       /* --help's exit-status line; NULL: 0, 1, 2 */
    /* state */
    int argc;
    char **argv;
    int idx;                       /* next argv index */
    const char *short_rest;        /* rest of a bundle like -qf */
    bool no_more_opts;
    const char **operands;         /* collected operands */
    int n_operands;
    /* common settings */
    int level;                     /* display level, default 2 */
    int threads;                   /* -T; 0 = auto */
    const char *output;            /* -o; NULL = stdout */
    bool force;
    int progress;                  /* -1 auto, 0 off, 1 on */
    int pending;                   /* --help, --version or --list-options seen */
};

/* Sets up c for argv and installs the signal handlers and atexit hook that
 * remove temporary outputs (SIGINT/SIGTERM/SIGHUP re-raise after cleanup). */
void ds_cli_init(struct ds_cli *c, int argc, char **argv);

/* Returns the next tool option id (with *arg for options taking one), or
 * DS_OPT_END when all arguments are consumed. Common options are handled
 * inside; --help, --version and --list-options print and exit 0 once all
 * arguments are parsed (a usage error anywhere still exits 2). Operands are
 * collected in c->operands. Usage errors exit 2. */
int ds_cli_next(struct ds_cli *c, const char **arg);

/* Messages, "prog: " prefixed, newline added. error: level >= 1; warn and
 * result: >= 2; info: >= 4. */
void ds_cli_error(const struct ds_cli *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ds_cli_warn(const struct ds_cli *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ds_cli_info(const struct ds_cli *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Usage error: message, "Try 'prog --help' for more information.", exit 2. */
noreturn void ds_cli_usage_error(const struct ds_cli *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Reports a libds failure (its detail message, or ds_strerror) and exits 1. */
noreturn void ds_cli_fail(const struct ds_cli *c, ds_err e);

/* Parses an integer / a float option value, or exits 2 naming the option. */
long long ds_cli_int(const struct ds_cli *c, const char *opt, const char *s, long long lo,
                     long long hi);
double ds_cli_float(const struct ds_cli *c, const char *opt, const char *s);

/* Exits 1 with "refusing to write binary data to a terminal; use -o FILE or
 * -f" when writing binary to a terminal stdout without -f, and refuses a
 * terminal stdin as binary input likewise. path NULL or "-" means stdio. */
void ds_cli_check_binary_stdout(const struct ds_cli *c, const char *path);
void ds_cli_check_binary_stdin(const struct ds_cli *c, const char *path);

/* Whether to draw progress: --progress/--no-progress, else stderr is a
 * terminal in the foreground process group and the level is at least the
 * default 2 (so -q turns it off; as zstd and git do on a terminal). */
bool ds_cli_progress_enabled(const struct ds_cli *c);

/* Progress callback for libds (ds_progress_fn): redraws "prog: what  37%"
 * with \r at most ~6 times a second; done == total ends the line. ud is the
 * struct ds_cli. Returns 0. */
int ds_cli_progress(void *ud, uint64_t done, uint64_t total, const char *what);

/* fflush, ferror and fclose on stdout; exits 1 on failure. Call before exit 0. */
void ds_cli_finish_stdout(const struct ds_cli *c);

struct cJSON;
/* Prints root as one line of JSON on stdout and frees it (the --json
 * reports); false, after an error message, when out of memory. */
bool ds_cli_put_json(const struct ds_cli *c, struct cJSON *root);

#endif
