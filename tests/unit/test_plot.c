/*
 * test_plot.c - SVG loss plots: well-formed XML (xmllint when installed, and
 * a structural check always), the right number of points per series, line
 * breaks at non-finite values, tick labels, escaping, determinism, atomic
 * writing and bad arguments.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ds_error.h"
#include "ds_io.h"
#include "ds_plot.h"
#include "test.h"

static char scratch[64];

static size_t count(const char *s, const char *needle)
{
    size_t n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* Coordinate pairs in the points attribute of the k-th polyline, or -1. */
static long polyline_points(const char *svg, size_t k)
{
    const char *p = svg;
    for (size_t i = 0; i <= k; i++) {
        p = strstr(p, "<polyline");
        if (!p)
            return -1;
        p++;
    }
    p = strstr(p, "points=\"");
    if (!p)
        return -1;
    p += 8;
    long n = 0;
    for (; *p && *p != '"'; p++)
        n += *p == ',';
    return n;
}

/* Structural check: every '<' opens a tag or comment or declaration, element
 * tags nest properly, attribute values are quoted, and '&' only starts an
 * entity. Returns 0 when fine. */
static int well_formed(const char *s)
{
    const char *stack[64];
    size_t lens[64], depth = 0;
    for (const char *p = s; *p; p++) {
        if (*p == '&') {
            const char *e = strchr(p, ';');
            if (!e || e - p > 6)
                return 1;
            continue;
        }
        if (*p != '<')
            continue;
        const char *end = strchr(p, '>');
        if (!end)
            return 2;
        for (const char *q = p; q < end; q++)
            if (*q == '=' && q[1] != '"')
                return 3;
        if (p[1] == '?') {
            p = end;
            continue;
        }
        if (p[1] == '/') {
            size_t l = strcspn(p + 2, " >");
            if (!depth || lens[depth - 1] != l || strncmp(stack[depth - 1], p + 2, l))
                return 4;
            depth--;
        } else if (end[-1] != '/') {
            if (depth == 64)
                return 5;
            stack[depth] = p + 1;
            lens[depth++] = strcspn(p + 1, " >");
        }
        p = end;
    }
    return depth ? 6 : 0;
}

static int xmllint_ok(const char *svg, size_t len)
{
    char path[128], cmd[300];
    FILE *f;
    int rc;
    if (system("command -v xmllint >/dev/null 2>&1") != 0)
        return 1; // not installed: the structural check stands alone
    snprintf(path, sizeof(path), "%s/lint.svg", scratch);
    f = fopen(path, "wb");
    if (!f || fwrite(svg, 1, len, f) != len || fclose(f))
        return 0;
    snprintf(cmd, sizeof(cmd), "xmllint --noout '%s'", path);
    rc = system(cmd);
    unlink(path);
    return rc == 0;
}

TEST(loss_curves)
{
    double x[200], y[200], hx[10], hy[10];
    struct ds_plot_series s[2] = {{"training loss", x, y, 200}, {"held-out loss", hx, hy, 10}};
    struct ds_plot p = {"Loss <&> \"demo\"", "step", "loss (nats/token)", 0, 0};
    char *svg = NULL, *again = NULL;
    size_t len = 0, len2 = 0;

    for (int i = 0; i < 200; i++) {
        x[i] = i + 1;
        y[i] = 7.0 * exp(-i / 60.0) + 1.5;
    }
    for (int i = 0; i < 10; i++) {
        hx[i] = 20.0 * (i + 1);
        hy[i] = 7.2 * exp(-i / 3.0) + 1.7;
    }
    ASSERT_OK(ds_plot_svg(&p, s, 2, &svg, &len));
    ASSERT_EQ_INT(strlen(svg), len);
    ASSERT(!strncmp(svg, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=", 50));
    ASSERT_EQ_INT(well_formed(svg), 0);
    ASSERT(xmllint_ok(svg, len));
    ASSERT_EQ_INT(count(svg, "<polyline"), 2);
    ASSERT_EQ_INT(polyline_points(svg, 0), 200);
    ASSERT_EQ_INT(polyline_points(svg, 1), 10);
    ASSERT_EQ_INT(count(svg, "<circle"), 10); // dots only on the short series
    ASSERT(strstr(svg, ">Loss &lt;&amp;&gt; &quot;demo&quot;</text>"));
    ASSERT(strstr(svg, ">training loss</text>") && strstr(svg, ">held-out loss</text>"));
    ASSERT(strstr(svg, ">step</text>") && strstr(svg, ">loss (nats/token)</text>"));
    // x ticks 0, 50, ..., 200; y ticks in whole steps of 1 or 2
    ASSERT(strstr(svg, "text-anchor=\"middle\">0</text>"));
    ASSERT(strstr(svg, "text-anchor=\"middle\">200</text>"));
    ASSERT(strstr(svg, "text-anchor=\"end\">2</text>"));
    ASSERT(strstr(svg, "text-anchor=\"end\">8</text>"));
    ASSERT(!strstr(svg, "nan") && !strstr(svg, "inf"));

    ASSERT_OK(ds_plot_svg(&p, s, 2, &again, &len2));
    ASSERT(len == len2 && !memcmp(svg, again, len)); // deterministic
    free(svg);
    free(again);
}

TEST(breaks_and_edges)
{
    double x[7] = {0, 1, 2, 3, 4, 5, 6};
    double y[7] = {1, 2, NAN, 3, INFINITY, 4, 5};
    double one_x = 3, one_y = 0.25;
    struct ds_plot_series s[3] = {{"gappy", x, y, 7}, {"single", &one_x, &one_y, 1},
                                  {"empty", NULL, NULL, 0}};
    struct ds_plot p = {NULL, NULL, NULL, 400, 300};
    char *svg = NULL;
    size_t len;

    ASSERT_OK(ds_plot_svg(&p, s, 3, &svg, &len));
    ASSERT_EQ_INT(well_formed(svg), 0);
    ASSERT(xmllint_ok(svg, len));
    // [1,2] and [4,5] are lines; 3 alone is a dot; the single point a dot;
    // the short series also gets a dot per point (6 finite + 1)
    ASSERT_EQ_INT(count(svg, "<polyline"), 2);
    ASSERT_EQ_INT(polyline_points(svg, 0), 2);
    ASSERT_EQ_INT(polyline_points(svg, 1), 2);
    ASSERT_EQ_INT(count(svg, "<circle"), 6);
    ASSERT(strstr(svg, "width=\"400\" height=\"300\""));
    ASSERT(strstr(svg, ">empty</text>"));
    ASSERT(strstr(svg, "text-anchor=\"end\">0</text>")); // y 0.25 .. 5: steps of 1
    ASSERT(strstr(svg, "text-anchor=\"end\">5</text>"));
    free(svg);

    // nothing finite at all: axes 0..1
    ASSERT_OK(ds_plot_svg(&p, s + 2, 1, &svg, &len));
    ASSERT_EQ_INT(well_formed(svg), 0);
    ASSERT(strstr(svg, "text-anchor=\"middle\">1.0</text>"));
    free(svg);
    // no series
    ASSERT_OK(ds_plot_svg(&p, NULL, 0, &svg, &len));
    ASSERT_EQ_INT(well_formed(svg), 0);
    free(svg);
    // a constant series still gets a range
    double cy[3] = {2, 2, 2};
    struct ds_plot_series c = {"flat", x, cy, 3};
    ASSERT_OK(ds_plot_svg(&p, &c, 1, &svg, &len));
    ASSERT_EQ_INT(well_formed(svg), 0);
    ASSERT(!strstr(svg, "nan") && !strstr(svg, "inf"));
    free(svg);
}

TEST(write_and_errors)
{
    double x[2] = {0, 1}, y[2] = {1, 0};
    struct ds_plot_series s = {"a", x, y, 2}, many[17];
    struct ds_plot p = {"t", "x", "y", 0, 0};
    char path[128], *back = NULL, *svg = NULL;
    size_t n, len;

    snprintf(path, sizeof(path), "%s/loss.svg", scratch);
    ASSERT_OK(ds_plot_write(path, 0, &p, &s, 1));
    ASSERT_ERR(ds_plot_write(path, 0, &p, &s, 1), DS_ERR_EXISTS);
    ASSERT_OK(ds_plot_write(path, DS_WRITE_FORCE, &p, &s, 1));
    ASSERT_OK(ds_read_file(path, 1 << 20, &back, &n));
    ASSERT_OK(ds_plot_svg(&p, &s, 1, &svg, &len));
    ASSERT(n == len && !memcmp(back, svg, n));
    free(back);
    free(svg);
    unlink(path);

    for (int i = 0; i < 17; i++)
        many[i] = s;
    ASSERT_ERR(ds_plot_svg(&p, many, 17, &svg, &len), DS_ERR_LIMIT);
    p.width = 100;
    ASSERT_ERR(ds_plot_svg(&p, &s, 1, &svg, &len), DS_ERR_ARG);
    p.width = 0;
    s.x = NULL;
    ASSERT_ERR(ds_plot_svg(&p, &s, 1, &svg, &len), DS_ERR_ARG);
    ASSERT_ERR(ds_plot_write(path, 0, &p, &s, 1), DS_ERR_ARG);
    ASSERT(access(path, F_OK) != 0);
}

int main(void)
{
    snprintf(scratch, sizeof(scratch), "/tmp/ds-test-plot.XXXXXX");
    if (!mkdtemp(scratch)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(loss_curves);
    RUN(breaks_and_edges);
    RUN(write_and_errors);
    rmdir(scratch);
    return test_report();
}
