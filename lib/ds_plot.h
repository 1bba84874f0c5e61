/*
 * ds_plot.h - SVG line plots, for training curves (ds-distill --plot): one
 * or more series of (x, y) points, e.g. training loss and held-out loss
 * against the step.
 *
 * The plot has a frame, x and y axes with "nice" ticks (1, 2 or 5 times a
 * power of ten) and their labels, axis titles, a title and a legend (one
 * line per series, top right). Series are drawn in order with a fixed
 * palette (matplotlib's tab10); a series of at most 64 points also gets a
 * dot per point (e.g. a held-out loss measured every few hundred steps).
 * Points with a non-finite x or y break the line. The output depends only on the input (numbers are printed
 * with a fixed precision, no dates), so the same data gives the same bytes.
 * The SVG is standalone (XML declaration, xmlns) and valid XML: text is
 * escaped.
 */
#ifndef DS_PLOT_H
#define DS_PLOT_H

#include <stdbool.h>
#include <stddef.h>

#include "ds_error.h"

#ifdef __cplusplus
extern "C" {
#endif

struct ds_plot_series {
    const char *name;  /* legend text */
    const double *x;   /* n points; x need not be sorted (drawn in order) */
    const double *y;
    size_t n;
};

struct ds_plot {
    const char *title;   /* may be NULL */
    const char *xlabel;  /* may be NULL */
    const char *ylabel;  /* may be NULL */
    int width, height;   /* pixels, 200 .. 10000; 0: 720 x 450 */
};

/* The SVG text of the plot: malloc'd, NUL-terminated (free with free()),
 * *len its length (may be NULL). At most 16 series and 10 million points in
 * all (DS_ERR_LIMIT). Series without finite points are only listed in the
 * legend; with no finite point at all, the axes span 0..1. */
ds_err ds_plot_svg(const struct ds_plot *p, const struct ds_plot_series *s, size_t n_series,
                   char **out, size_t *len);

/* Writes the plot to path atomically (flags: enum ds_write_flags; NULL or
 * "-" is stdout). */
ds_err ds_plot_write(const char *path, unsigned flags, const struct ds_plot *p,
                     const struct ds_plot_series *s, size_t n_series);

#ifdef __cplusplus
}
#endif
#endif
