/* cli.c - option parsing, help, messages, terminal checks, progress, exit. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "ds.h"
#include "ds_banned.h"

static const struct ds_opt common_opts[] = {
    {DS_OPT_OUTPUT, 'o', "output", "FILE", "write the output to FILE ('-' for stdout)", "stdout",
     "file", false},
    {DS_OPT_FORCE, 'f', "force", NULL,
     "overwrite an existing output; allow binary output to a terminal", NULL, NULL, false},
    {DS_OPT_THREADS, 'T', "threads", "N", "use N threads (0 = all cores, or OMP_NUM_THREADS)",
     "0", NULL, false},
    {DS_OPT_PROGRESS, 0, "progress", NULL, "show progress even when stderr is not a terminal",
     NULL, NULL, false},
    {DS_OPT_NO_PROGRESS, 0, "no-progress", NULL, "never show progress", NULL, NULL, false},
    {DS_OPT_VERBOSE, 'v', "verbose", NULL, "print more (repeatable)", NULL, NULL, false},
    {DS_OPT_QUIET, 'q', "quiet", NULL, "print less: only errors (repeat: nothing)", NULL, NULL,
     false},
    {DS_OPT_HELP, 'h', "help", NULL, "show this help and exit", NULL, NULL, false},
    {DS_OPT_VERSION, 'V', "version", NULL, "show the version and exit (with -v: libraries)",
     NULL, NULL, false},
    {DS_OPT_LIST_OPTIONS, 0, "list-options", NULL, "list options for completion scripts", NULL,
     NULL, true},
    {0, 0, NULL, NULL, NULL, NULL, NULL, false},
};

static bool common_applies(const struct ds_cli *c, const struct ds_opt *o)
{
    if (o->id == DS_OPT_OUTPUT || o->id == DS_OPT_FORCE)
        return c->output_file;
    return true;
}

/* ---- signals ---------------------------------------------------------------- */

static const char **operands_alloc; /* freed at exit */

static void on_signal(int sig)
{
    ds_io_cleanup_temps();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void on_exit_cleanup(void)
{
    ds_io_cleanup_temps();
    free(operands_alloc);
    operands_alloc = NULL;
}

/* Installs on_signal for sig unless the signal is ignored (nohup). */
static void catch_signal(int sig)
{
    struct sigaction sa, old;
    if (sigaction(sig, NULL, &old) == 0 && old.sa_handler == SIG_IGN)
        return;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
}

void ds_cli_init(struct ds_cli *c, int argc, char **argv)
{
    const char *slash = argc > 0 ? strrchr(argv[0], '/') : NULL;
    if (!c->prog)
        c->prog = slash ? slash + 1 : argc > 0 ? argv[0] : "ds";
    c->argc = argc;
    c->argv = argv;
    c->idx = 1;
    c->short_rest = NULL;
    c->no_more_opts = false;
    c->operands = calloc((size_t)(argc > 0 ? argc : 1), sizeof(*c->operands));
    if (!c->operands) {
        fprintf(stderr, "%s: out of memory\n", c->prog);
        exit(DS_EXIT_FAILURE);
    }
    operands_alloc = c->operands;
    c->n_operands = 0;
    c->pending = 0;
    c->level = 2;
    c->threads = 0;
    c->output = NULL;
    c->force = false;
    c->progress = -1;
    atexit(on_exit_cleanup);
    catch_signal(SIGINT);
    catch_signal(SIGTERM);
    catch_signal(SIGHUP);
    // a closed pipe on stdout or stderr (`... 2>&1 | head`) ends the tool as
    // usual, by SIGPIPE, but not before its temporary outputs are removed
    catch_signal(SIGPIPE);
}

/* ---- messages ----------------------------------------------------------------- */

static void vmsg(const struct ds_cli *c, int level, const char *fmt, va_list ap)
{
    if (c->level < level)
        return;
    fprintf(stderr, "%s: ", c->prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void ds_cli_error(const struct ds_cli *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmsg(c, 1, fmt, ap);
    va_end(ap);
}

void ds_cli_warn(const struct ds_cli *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmsg(c, 2, fmt, ap);
    va_end(ap);
}

void ds_cli_info(const struct ds_cli *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmsg(c, 4, fmt, ap);
    va_end(ap);
}

noreturn void ds_cli_usage_error(const struct ds_cli *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", c->prog);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nUsage: %s %s\nTry '%s --help' for more information.\n", c->prog,
            c->synopsis, c->prog);
    exit(DS_EXIT_USAGE);
}

noreturn void ds_cli_fail(const struct ds_cli *c, ds_err e)
{
    const char *msg = ds_errmsg();
    if (c->level >= 1) {
        fprintf(stderr, "%s: %s\n", c->prog, msg && *msg ? msg : ds_strerror(e));
        if (c->level >= 4 && *ds_errloc())
            fprintf(stderr, "%s: (raised at %s)\n", c->prog, ds_errloc());
    }
    exit(DS_EXIT_FAILURE);
}

/* ---- help ------------------------------------------------------------------------ */

static void print_opt(FILE *f, const struct ds_opt *o)
{
    char left[64];
    int n;
    if (o->short_name)
        n = snprintf(left, sizeof(left), "-%c, --%s", o->short_name, o->long_name);
    else
        n = snprintf(left, sizeof(left), "    --%s", o->long_name);
    if (o->arg && n > 0 && (size_t)n < sizeof(left))
        snprintf(left + n, sizeof(left) - (size_t)n, " %s", o->arg);
    fprintf(f, "  %-28s %s", left, o->help);
    if (o->def)
        fprintf(f, " (default: %s)", o->def);
    fputc('\n', f);
}

static void print_help(const struct ds_cli *c)
{
    printf("Usage: %s %s\n%s\n\nOptions:\n", c->prog, c->synopsis, c->summary);
    for (const struct ds_opt *o = c->opts; o->long_name; o++)
        if (!o->hidden)
            print_opt(stdout, o);
    printf("\nCommon options:\n");
    for (const struct ds_opt *o = common_opts; o->long_name; o++)
        if (!o->hidden && common_applies(c, o))
            print_opt(stdout, o);
    printf("\nExit status: %s.\n"
           "See %s(1) for details and examples.\n",
           c->exit_status ? c->exit_status : "0 success, 1 failure, 2 usage error", c->prog);
}

static void list_options(const struct ds_cli *c)
{
    const struct ds_opt *tables[2] = {c->opts, common_opts};
    for (int t = 0; t < 2; t++)
        for (const struct ds_opt *o = tables[t]; o->long_name; o++) {
            if (o->hidden || (t == 1 && !common_applies(c, o)))
                continue;
            printf("%s\t--%s\t%s\t%s\t%s\n", o->short_name ? (char[]){'-', o->short_name, 0} : "",
                   o->long_name, o->arg ? o->arg : "", o->complete ? o->complete : "", o->help);
        }
}

static noreturn void finish_info(const struct ds_cli *c)
{
    ds_cli_finish_stdout(c);
    exit(DS_EXIT_OK);
}

/* Prints what --help, --version or --list-options asked for and exits 0. */
static noreturn void run_pending(struct ds_cli *c)
{
    switch (c->pending) {
    case DS_OPT_HELP:
        print_help(c);
        break;
    case DS_OPT_VERSION:
        printf("%s %s\n", c->prog, ds_version());
        if (c->level > 2) {
            char buf[256];
            ds_library_versions(buf, sizeof(buf));
            printf("%s\n", buf);
        }
        break;
    default:
        list_options(c);
        break;
    }
    finish_info(c);
}

/* ---- parsing ------------------------------------------------------------------------ */

static const struct ds_opt *find_long(const struct ds_cli *c, const char *name, size_t len)
{
    const struct ds_opt *tables[2] = {c->opts, common_opts};
    for (int t = 0; t < 2; t++)
        for (const struct ds_opt *o = tables[t]; o->long_name; o++)
            if (strlen(o->long_name) == len && strncmp(o->long_name, name, len) == 0 &&
                (t == 0 || common_applies(c, o)))
                return o;
    return NULL;
}

static const struct ds_opt *find_short(const struct ds_cli *c, char ch)
{
    const struct ds_opt *tables[2] = {c->opts, common_opts};
    for (int t = 0; t < 2; t++)
        for (const struct ds_opt *o = tables[t]; o->long_name; o++)
            if (o->short_name == ch && (t == 0 || common_applies(c, o)))
                return o;
    return NULL;
}

/* Handles a common option; returns true when it was one. */
static bool handle_common(struct ds_cli *c, const struct ds_opt *o, const char *arg)
{
    switch (o->id) {
    case DS_OPT_HELP:
    case DS_OPT_VERSION:
    case DS_OPT_LIST_OPTIONS:
        /* acted on once all arguments are parsed (so -V -v works too) */
        if (!c->pending)
            c->pending = o->id;
        return true;
    case DS_OPT_QUIET:
        if (c->level > 0)
            c->level--;
        return true;
    case DS_OPT_VERBOSE:
        c->level++;
        return true;
    case DS_OPT_THREADS:
        c->threads = (int)ds_cli_int(c, "--threads", arg, 0, 4096);
        return true;
    case DS_OPT_OUTPUT:
        c->output = arg;
        return true;
    case DS_OPT_FORCE:
        c->force = true;
        return true;
    case DS_OPT_PROGRESS:
        c->progress = 1;
        return true;
    case DS_OPT_NO_PROGRESS:
        c->progress = 0;
        return true;
    default:
        return false;
    }
}

int ds_cli_next(struct ds_cli *c, const char **arg)
{
    for (;;) {
        const struct ds_opt *o;
        const char *val = NULL;

        if (c->short_rest && *c->short_rest) {
            char ch = *c->short_rest++;
            o = find_short(c, ch);
            if (!o)
                ds_cli_usage_error(c, "unknown option '-%c'", ch);
            if (o->arg) {
                if (*c->short_rest) {
                    val = c->short_rest;
                } else if (c->idx < c->argc) {
                    val = c->argv[c->idx++];
                } else {
                    ds_cli_usage_error(c, "option '-%c' needs an argument %s", ch, o->arg);
                }
                c->short_rest = NULL;
            }
        } else {
            const char *a;
            c->short_rest = NULL;
            if (c->idx >= c->argc) {
                if (c->pending)
                    run_pending(c);
                return DS_OPT_END;
            }
            a = c->argv[c->idx++];
            if (c->no_more_opts || a[0] != '-' || a[1] == '\0') {
                c->operands[c->n_operands++] = a;
                continue;
            }
            if (a[1] == '-' && a[2] == '\0') {
                c->no_more_opts = true;
                continue;
            }
            if (a[1] != '-') {
                c->short_rest = a + 1;
                continue;
            }
            const char *name = a + 2, *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            o = find_long(c, name, len);
            if (!o)
                ds_cli_usage_error(c, "unknown option '--%.*s'", (int)len, name);
            if (o->arg) {
                if (eq)
                    val = eq + 1;
                else if (c->idx < c->argc)
                    val = c->argv[c->idx++];
                else
                    ds_cli_usage_error(c, "option '--%s' needs an argument %s", o->long_name,
                                       o->arg);
            } else if (eq) {
                ds_cli_usage_error(c, "option '--%s' takes no argument", o->long_name);
            }
        }
        if (handle_common(c, o, val))
            continue;
        *arg = val;
        return o->id;
    }
}

long long ds_cli_int(const struct ds_cli *c, const char *opt, const char *s, long long lo,
                     long long hi)
{
    char *end;
    long long v;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        ds_cli_usage_error(c, "invalid value '%s' for %s (an integer from %lld to %lld)", s,
                           opt, lo, hi);
    return v;
}

double ds_cli_float(const struct ds_cli *c, const char *opt, const char *s)
{
    char *end;
    double v;
    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s || *end)
        ds_cli_usage_error(c, "invalid value '%s' for %s (a number)", s, opt);
    return v;
}

/* ---- terminals, progress, stdout ------------------------------------------------------ */

static bool is_stdio(const char *path)
{
    return !path || !strcmp(path, "-");
}

void ds_cli_check_binary_stdout(const struct ds_cli *c, const char *path)
{
    if (is_stdio(path) && !c->force && isatty(STDOUT_FILENO)) {
        ds_cli_error(c, "refusing to write binary data to a terminal; use -o FILE or -f");
        exit(DS_EXIT_FAILURE);
    }
}

void ds_cli_check_binary_stdin(const struct ds_cli *c, const char *path)
{
    if (is_stdio(path) && !c->force && isatty(STDIN_FILENO)) {
        ds_cli_error(c, "refusing to read binary data from a terminal; give an INPUT file");
        exit(DS_EXIT_FAILURE);
    }
}

bool ds_cli_progress_enabled(const struct ds_cli *c)
{
    if (c->progress >= 0)
        return c->progress == 1;
    if (c->level < 2 || !isatty(STDERR_FILENO))
        return false;
    return tcgetpgrp(STDERR_FILENO) == getpgrp();
}

int ds_cli_progress(void *ud, uint64_t done, uint64_t total, const char *what)
{
    const struct ds_cli *c = ud;
    static struct timespec last;
    struct timespec now;
    bool end = total && done >= total;

    clock_gettime(CLOCK_MONOTONIC, &now);
    if (!end && (now.tv_sec - last.tv_sec) * 1000000000L + (now.tv_nsec - last.tv_nsec) <
                    160000000L)
        return 0;
    last = now;
    if (total)
        fprintf(stderr, "\r%s: %-40.40s %3d%%", c->prog, what ? what : "",
                (int)(done * 100 / total));
    else
        fprintf(stderr, "\r%s: %-40.40s", c->prog, what ? what : "");
    if (end)
        fputc('\n', stderr);
    fflush(stderr);
    return 0;
}

bool ds_cli_put_json(const struct ds_cli *c, struct cJSON *root)
{
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!text) {
        ds_cli_error(c, "out of memory");
        return false;
    }
    puts(text);
    cJSON_free(text);
    return true;
}

void ds_cli_finish_stdout(const struct ds_cli *c)
{
    errno = 0;
    if (fflush(stdout) != 0 || ferror(stdout) || fclose(stdout) != 0) {
        if (c->level >= 1)
            fprintf(stderr, "%s: error writing to standard output%s%s\n", c->prog,
                    errno ? ": " : "", errno ? strerror(errno) : "");
        exit(DS_EXIT_FAILURE);
    }
}
