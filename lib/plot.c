/*
 * plot.c - SVG line plots (see ds_plot.h).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds_io.h"
#include "ds_plot.h"
#include "error_impl.h"
#include "strbuf_impl.h"
#include "ds_banned.h"

#define MAX_SERIES 16
#define MAX_POINTS ((size_t)10000000)
#define DOTS_MAX 64
#define ML 72.0 /* margins: left, right, top, bottom */
#define MR 24.0
#define MT 44.0
#define MB 56.0

static const char *const palette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                      "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
#define N_PALETTE (sizeof(palette) / sizeof(palette[0]))

struct axis {
    double lo, hi, step;
    int decimals;
};

/* Text as XML character data: markup characters escaped, control bytes
 * (invalid in XML 1.0) replaced by '?'. */
static void put_text(struct ds_sbuf *b, const char *s)
{
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        switch (c) {
        case '&': ds_sbuf_puts(b, "&amp;"); break;
        case '<': ds_sbuf_puts(b, "&lt;"); break;
        case '>': ds_sbuf_puts(b, "&gt;"); break;
        case '"': ds_sbuf_puts(b, "&quot;"); break;
        case '\'': ds_sbuf_puts(b, "&apos;"); break;
        default: ds_sbuf_put(b, c < 0x20 || c == 0x7f ? "?" : s, 1);
        }
    }
}

/* Ticks covering [lo, hi]: a step of 1, 2 or 5 times a power of ten giving
 * about 6 intervals, the range widened to whole steps. */
static struct axis nice_axis(double lo, double hi)
{
    struct axis a;
    double raw, mag, norm;

    if (!(hi > lo)) {
        double pad = lo != 0 ? fabs(lo) * 0.1 : 0.5;
        lo -= pad;
        hi += pad;
    }
    raw = (hi - lo) / 6;
    mag = pow(10, floor(log10(raw)));
    norm = raw / mag;
    a.step = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
    a.lo = floor(lo / a.step) * a.step;
    a.hi = ceil(hi / a.step) * a.step;
    a.decimals = a.step >= 1 ? 0 : (int)ceil(-log10(a.step) - 1e-9);
    if (a.decimals > 12)
        a.decimals = 12;
    return a;
}

static bool finite_pt(const struct ds_plot_series *s, size_t i)
{
    return isfinite(s->x[i]) && isfinite(s->y[i]);
}

static void put_label(struct ds_sbuf *b, double v, int decimals)
{
    char t[64];
    if (fabs(v) < 1e-12)
        v = 0; // no "-0"
    snprintf(t, sizeof(t), "%.*f", decimals, v);
    ds_sbuf_puts(b, t);
}

static void draw_axes(struct ds_sbuf *b, const struct axis *ax, const struct axis *ay, double w,
                      double h)
{
    double px0 = ML, px1 = w - MR, py0 = MT, py1 = h - MB;
    long nx = lround((ax->hi - ax->lo) / ax->step), ny = lround((ay->hi - ay->lo) / ay->step);

    ds_sbuf_puts(b, "<g font-family=\"sans-serif\" font-size=\"12\" fill=\"#333\">\n");
    for (long i = 0; i <= nx; i++) {
        double v = ax->lo + (double)i * ax->step;
        double x = px0 + (px1 - px0) * (double)i / (double)nx;
        ds_sbuf_printf(b, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" "
                          "stroke=\"#e6e6e6\"/>\n", x, py0, x, py1);
        ds_sbuf_printf(b, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" "
                          "stroke=\"#333\"/>\n", x, py1, x, py1 + 5);
        ds_sbuf_printf(b, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\">", x, py1 + 19);
        put_label(b, v, ax->decimals);
        ds_sbuf_puts(b, "</text>\n");
    }
    for (long i = 0; i <= ny; i++) {
        double v = ay->lo + (double)i * ay->step;
        double y = py1 - (py1 - py0) * (double)i / (double)ny;
        ds_sbuf_printf(b, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" "
                          "stroke=\"#e6e6e6\"/>\n", px0, y, px1, y);
        ds_sbuf_printf(b, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" "
                          "stroke=\"#333\"/>\n", px0 - 5, y, px0, y);
        ds_sbuf_printf(b, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"end\">", px0 - 8, y + 4);
        put_label(b, v, ay->decimals);
        ds_sbuf_puts(b, "</text>\n");
    }
    ds_sbuf_printf(b, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"none\" "
                      "stroke=\"#333\"/>\n</g>\n", px0, py0, px1 - px0, py1 - py0);
}

/* One series: a polyline per run of finite points (a lone point: a dot),
 * plus a dot per point when the series is short. */
static void draw_series(struct ds_sbuf *b, const struct ds_plot_series *s, const char *color,
                        const struct axis *ax, const struct axis *ay, double w, double h)
{
    double px0 = ML, px1 = w - MR, py0 = MT, py1 = h - MB;
    size_t i = 0, n_fin = 0;

    for (size_t j = 0; j < s->n; j++)
        n_fin += finite_pt(s, j);
    ds_sbuf_printf(b, "<g stroke=\"%s\" fill=\"%s\">\n", color, color);
    while (i < s->n) {
        size_t j = i;
        while (j < s->n && finite_pt(s, j))
            j++;
        if (j - i >= 2) {
            ds_sbuf_puts(b, "<polyline fill=\"none\" stroke-width=\"1.5\" points=\"");
            for (size_t k = i; k < j; k++) {
                double x = px0 + (px1 - px0) * (s->x[k] - ax->lo) / (ax->hi - ax->lo);
                double y = py1 - (py1 - py0) * (s->y[k] - ay->lo) / (ay->hi - ay->lo);
                ds_sbuf_printf(b, "%s%.2f,%.2f", k > i ? " " : "", x, y);
            }
            ds_sbuf_puts(b, "\"/>\n");
        }
        for (size_t k = i; k < j; k++) {
            if (j - i >= 2 && n_fin > DOTS_MAX)
                break;
            double x = px0 + (px1 - px0) * (s->x[k] - ax->lo) / (ax->hi - ax->lo);
            double y = py1 - (py1 - py0) * (s->y[k] - ay->lo) / (ay->hi - ay->lo);
            ds_sbuf_printf(b, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"2.5\" stroke=\"none\"/>\n", x,
                           y);
        }
        i = j < s->n ? j + 1 : j;
    }
    ds_sbuf_puts(b, "</g>\n");
}

static void draw_legend(struct ds_sbuf *b, const struct ds_plot_series *s, size_t n, double w)
{
    size_t longest = 0;
    double lw, x, y = MT + 10;

    for (size_t i = 0; i < n; i++) {
        size_t l = s[i].name ? strlen(s[i].name) : 0;
        longest = l > longest ? l : longest;
    }
    lw = 40 + 7.0 * (double)(longest < 60 ? longest : 60);
    x = w - MR - 10 - lw;
    ds_sbuf_printf(b, "<g font-family=\"sans-serif\" font-size=\"12\">\n"
                      "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"#fff\" "
                      "fill-opacity=\"0.85\" stroke=\"#ccc\"/>\n",
                   x, y, lw, 18.0 * (double)n + 8);
    for (size_t i = 0; i < n; i++) {
        double ly = y + 16 + 18.0 * (double)i;
        ds_sbuf_printf(b, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"%s\" "
                          "stroke-width=\"2\"/>\n",
                       x + 8, ly - 4, x + 30, ly - 4, palette[i % N_PALETTE]);
        ds_sbuf_printf(b, "<text x=\"%.2f\" y=\"%.2f\" fill=\"#333\">", x + 36, ly);
        put_text(b, s[i].name);
        ds_sbuf_puts(b, "</text>\n");
    }
    ds_sbuf_puts(b, "</g>\n");
}

ds_err ds_plot_svg(const struct ds_plot *p, const struct ds_plot_series *s, size_t n_series,
                   char **out, size_t *len)
{
    struct ds_sbuf b = DS_SBUF_INIT;
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY, w, h;
    size_t total = 0;
    struct axis ax, ay;

    DS_RETURN_IF(!p || !out || (!s && n_series), DS_ERR_ARG, "plot, series or output missing");
    *out = NULL;
    DS_RETURN_IF(n_series > MAX_SERIES, DS_ERR_LIMIT, "%zu series is too many (at most %d)",
                 n_series, MAX_SERIES);
    DS_RETURN_IF((p->width && (p->width < 200 || p->width > 10000)) ||
                     (p->height && (p->height < 200 || p->height > 10000)),
                 DS_ERR_ARG, "plot size %dx%d is out of range (200 to 10000)", p->width,
                 p->height);
    w = p->width ? p->width : 720;
    h = p->height ? p->height : 450;
    for (size_t i = 0; i < n_series; i++) {
        DS_RETURN_IF(s[i].n && (!s[i].x || !s[i].y), DS_ERR_ARG, "series %zu has no data", i);
        DS_RETURN_IF(s[i].n > MAX_POINTS - total, DS_ERR_LIMIT,
                     "more than %zu points is too many", MAX_POINTS);
        total += s[i].n;
        for (size_t j = 0; j < s[i].n; j++) {
            if (!finite_pt(&s[i], j))
                continue;
            xmin = fmin(xmin, s[i].x[j]);
            xmax = fmax(xmax, s[i].x[j]);
            ymin = fmin(ymin, s[i].y[j]);
            ymax = fmax(ymax, s[i].y[j]);
        }
    }
    if (xmin > xmax)
        xmin = ymin = 0, xmax = ymax = 1;
    ax = nice_axis(xmin, xmax);
    ay = nice_axis(ymin, ymax);

    ds_sbuf_printf(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                       "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
                       "viewBox=\"0 0 %.0f %.0f\">\n"
                       "<rect width=\"100%%\" height=\"100%%\" fill=\"#fff\"/>\n", w, h, w, h);
    if (p->title) {
        ds_sbuf_printf(&b, "<text x=\"%.2f\" y=\"26\" text-anchor=\"middle\" "
                           "font-family=\"sans-serif\" font-size=\"16\">", w / 2);
        put_text(&b, p->title);
        ds_sbuf_puts(&b, "</text>\n");
    }
    draw_axes(&b, &ax, &ay, w, h);
    if (p->xlabel) {
        ds_sbuf_printf(&b, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\" "
                           "font-family=\"sans-serif\" font-size=\"13\">",
                       (ML + w - MR) / 2, h - 14);
        put_text(&b, p->xlabel);
        ds_sbuf_puts(&b, "</text>\n");
    }
    if (p->ylabel) {
        double cy = (MT + h - MB) / 2;
        ds_sbuf_printf(&b, "<text x=\"18\" y=\"%.2f\" text-anchor=\"middle\" "
                           "font-family=\"sans-serif\" font-size=\"13\" "
                           "transform=\"rotate(-90 18 %.2f)\">", cy, cy);
        put_text(&b, p->ylabel);
        ds_sbuf_puts(&b, "</text>\n");
    }
    for (size_t i = 0; i < n_series; i++)
        draw_series(&b, &s[i], palette[i % N_PALETTE], &ax, &ay, w, h);
    if (n_series)
        draw_legend(&b, s, n_series, w);
    ds_sbuf_puts(&b, "</svg>\n");
    return ds_sbuf_detach(&b, out, len);
}

ds_err ds_plot_write(const char *path, unsigned flags, const struct ds_plot *p,
                     const struct ds_plot_series *s, size_t n_series)
{
    struct ds_writer *w = NULL;
    char *svg = NULL;
    size_t len = 0;
    ds_err rc;

    DS_CHECK(ds_plot_svg(p, s, n_series, &svg, &len));
    DS_CHECK(ds_writer_open(&w, path, flags | DS_WRITE_RAW, 0, 1));
    DS_CHECK(ds_writer_write(w, svg, len));
    DS_CHECK(ds_writer_commit(w));
out:
    ds_writer_free(w);
    free(svg);
    return rc;
}
