/* nsa_picture.c -- draw which keys each query of an NSA layer attends to.

   Runs the CPU reference (nsa_ref_compress, nsa_ref_block_scores,
   nsa_ref_select) on random inputs of one sequence and writes an SVG picture,
   one self-contained file with no dependencies:

     default view   the (query, key) plane: keys across, queries down. Each
                    cell shows the branch that reaches it, by priority
                      forced selected block > window > selected block >
                      compressed region (keys covered by visible compressed
                      blocks) > nothing.
                    Large T is aggregated: a cell of c x c (query, key) pairs
                    takes the class most of its pairs have (ties to the
                    higher priority).
     --tiles        the selection itself: one row per selection unit (a query,
                    or a query tile of bq queries), one column per selection
                    block: forced, selected, eligible but not selected (grey,
                    darker = higher block score), not eligible.

   Random inputs: by default the keys carry a shared direction with a
   per-selection-block strength, so that some blocks matter to every query
   and the selection is coherent from one query to the next; --plain draws
   i.i.d. normal Q, K, V instead.

   Build:  cc -std=c99 -O2 -fopenmp -I. tools/nsa_picture.c -lm -o build/nsa_picture
   Usage:  build/nsa_picture [--preset paper|fla|tile64|tile128] [--T N]
                             [--H N] [--Hkv N] [--D N] [--seed S] [--head KVHEAD]
                             [--bq N] [--w N] [--n N] [--cell C] [--tiles]
                             [--plain]
                             [--out FILE.svg]                                */
#define NSA_REF_IMPLEMENTATION
#include "nsa_ref.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- options ------------------------------------------------------------ */

typedef struct pic_opts {
    const char *preset;
    int T, H, Hkv, D, head, bq, w, n, cell, tiles, plain;
    unsigned long long seed;
    const char *out;
} pic_opts;

static void usage(FILE *f)
{
    fprintf(f,
        "usage: nsa_picture [options]\n"
        "  --preset NAME  paper (default), fla, tile64, tile128\n"
        "  --T N          sequence length (default 4096)\n"
        "  --H N          query heads (default 4)\n"
        "  --Hkv N        kv heads (default 1); H must be a multiple\n"
        "  --D N          head dim of Q, K and V (default 16)\n"
        "  --seed S       random seed (default 1)\n"
        "  --head K       kv head to draw (default 0)\n"
        "  --bq N         override the preset's query tile bq\n"
        "  --w N          override the preset's window w\n"
        "  --n N          override the preset's block count n\n"
        "  --cell C       tokens per picture cell (default: T/128, at least 1)\n"
        "  --tiles        draw the selection per unit and block instead\n"
        "  --plain        i.i.d. normal inputs (no salient key blocks)\n"
        "  --out FILE     output file (default: standard output)\n");
}

static int parse_int(const char *name, const char *s, long lo, long hi,
                     int *out)
{
    char *end;
    long v;
    if (!s) {
        fprintf(stderr, "nsa_picture: %s needs a value\n", name);
        return 0;
    }
    v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "nsa_picture: %s must be an integer in [%ld, %ld] "
                "(got '%s')\n", name, lo, hi, s);
        return 0;
    }
    *out = (int)v;
    return 1;
}

static int parse_opts(int argc, char **argv, pic_opts *o)
{
    int i;
    o->preset = "paper";
    o->T = 4096;
    o->H = 4;
    o->Hkv = 1;
    o->D = 16;
    o->head = 0;
    o->bq = 0;
    o->w = 0;
    o->n = 0;
    o->cell = 0;
    o->tiles = 0;
    o->plain = 0;
    o->seed = 1;
    o->out = NULL;
    for (i = 1; i < argc; ++i) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--tiles")) {
            o->tiles = 1;
        } else if (!strcmp(a, "--plain")) {
            o->plain = 1;
        } else if (!strcmp(a, "--preset")) {
            if (!v) { fprintf(stderr, "nsa_picture: --preset needs a value\n"); return 0; }
            o->preset = v; ++i;
        } else if (!strcmp(a, "--out")) {
            if (!v) { fprintf(stderr, "nsa_picture: --out needs a value\n"); return 0; }
            o->out = v; ++i;
        } else if (!strcmp(a, "--seed")) {
            char *end;
            if (!v) { fprintf(stderr, "nsa_picture: --seed needs a value\n"); return 0; }
            o->seed = strtoull(v, &end, 10);
            if (*v == '\0' || *end != '\0') {
                fprintf(stderr, "nsa_picture: --seed must be an integer\n");
                return 0;
            }
            ++i;
        } else if (!strcmp(a, "--T")) {
            if (!parse_int(a, v, 1, 65536, &o->T)) return 0;
            ++i;
        } else if (!strcmp(a, "--H")) {
            if (!parse_int(a, v, 1, 64, &o->H)) return 0;
            ++i;
        } else if (!strcmp(a, "--Hkv")) {
            if (!parse_int(a, v, 1, 64, &o->Hkv)) return 0;
            ++i;
        } else if (!strcmp(a, "--D")) {
            if (!parse_int(a, v, 1, 256, &o->D)) return 0;
            ++i;
        } else if (!strcmp(a, "--head")) {
            if (!parse_int(a, v, 0, 63, &o->head)) return 0;
            ++i;
        } else if (!strcmp(a, "--bq")) {
            if (!parse_int(a, v, 1, 65536, &o->bq)) return 0;
            ++i;
        } else if (!strcmp(a, "--w")) {
            if (!parse_int(a, v, 1, 1 << 30, &o->w)) return 0;
            ++i;
        } else if (!strcmp(a, "--n")) {
            if (!parse_int(a, v, 1, 1 << 20, &o->n)) return 0;
            ++i;
        } else if (!strcmp(a, "--cell")) {
            if (!parse_int(a, v, 1, 65536, &o->cell)) return 0;
            ++i;
        } else {
            fprintf(stderr, "nsa_picture: unknown option '%s'\n", a);
            usage(stderr);
            return 0;
        }
    }
    if (o->H % o->Hkv != 0) {
        fprintf(stderr, "nsa_picture: --H %d is not a multiple of --Hkv %d\n",
                o->H, o->Hkv);
        return 0;
    }
    if (o->head >= o->Hkv) {
        fprintf(stderr, "nsa_picture: --head %d: there are only %d kv heads\n",
                o->head, o->Hkv);
        return 0;
    }
    return 1;
}

static int preset_config(const char *name, nsa_config *c)
{
    if (!strcmp(name, "paper")) *c = nsa_config_paper();
    else if (!strcmp(name, "fla")) *c = nsa_config_fla();
    else if (!strcmp(name, "tile64")) *c = nsa_config_tile(64, 64);
    else if (!strcmp(name, "tile128")) *c = nsa_config_tile(128, 128);
    else return 0;
    return 1;
}

/* ---- random inputs ------------------------------------------------------ */

static uint64_t rng_state;

static uint64_t rng_next(void) /* splitmix64 */
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double rng_uniform(void) /* (0, 1) */
{
    return ((double)(rng_next() >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}
static double rng_normal(void)
{
    double u1 = rng_uniform(), u2 = rng_uniform();
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* Q [T,H,D], K, V [T,Hkv,D], fp32. Structured unless plain: every key of
   selection block j (kv head g) carries amp[g][j] * u for one shared unit
   direction u, and every query carries 4 * u, so a block's importance
   follows its strength. */
static void make_inputs(const pic_opts *o, int lp, float *q, float *k,
                        float *v)
{
    const int T = o->T, H = o->H, Hkv = o->Hkv, D = o->D;
    const int nblk = (T + lp - 1) / lp;
    double *u = (double *)calloc((size_t)D, sizeof(double));
    double *amp = (double *)calloc((size_t)Hkv * nblk, sizeof(double));
    double norm = 0.0;
    int t, h, e, j;
    rng_state = o->seed * 0x2545f4914f6cdd1dull + 12345u;
    for (e = 0; e < D; ++e) {
        u[e] = rng_normal();
        norm += u[e] * u[e];
    }
    norm = sqrt(norm) > 0 ? sqrt(norm) : 1.0;
    for (e = 0; e < D; ++e) u[e] /= norm;
    for (j = 0; j < Hkv * nblk; ++j) {
        double r = rng_uniform();
        amp[j] = o->plain ? 0.0 : 5.0 * r * r * r;
    }
    for (t = 0; t < T; ++t) {
        for (h = 0; h < H; ++h)
            for (e = 0; e < D; ++e)
                q[((size_t)t * H + h) * D + e] =
                    (float)((o->plain ? 1.0 : 0.5) * rng_normal() +
                            (o->plain ? 0.0 : 4.0 * u[e]));
        for (h = 0; h < Hkv; ++h) {
            double a = amp[h * nblk + t / lp];
            for (e = 0; e < D; ++e) {
                k[((size_t)t * Hkv + h) * D + e] =
                    (float)(rng_normal() + a * u[e]);
                v[((size_t)t * Hkv + h) * D + e] = (float)rng_normal();
            }
        }
    }
    free(u);
    free(amp);
}

/* ---- SVG output --------------------------------------------------------- */

/* Plane classes in increasing priority, then the tile view's. */
enum { C_NONE = 0, C_CMP, C_SLC, C_WIN, C_FORCED, C_GREY0 };
#define N_GREY 5
#define N_CLASS (C_GREY0 + N_GREY + 1) /* + C_INELIGIBLE */
#define C_INELIGIBLE (C_GREY0 + N_GREY)

static const char *class_colour[N_CLASS] = {
    "#ffffff", /* none */
    "#bcd7f0", /* compressed */
    "#f0a030", /* selected */
    "#63be7b", /* window */
    "#8e2c8e", /* forced selected */
    "#f2f2f2", "#dddddd", "#c4c4c4", "#aaaaaa", "#8f8f8f", /* grey ramp */
    "#ffffff"  /* not eligible */
};

/* Rectangles of equal class merged along rows, then down columns. */
typedef struct run { int x0, x1, y0, cls; } run;

typedef struct svg_out {
    FILE *f;
    double ox, oy, cw, ch; /* origin and cell size in px */
    long rects;
} svg_out;

static void emit_rect(svg_out *s, int x0, int x1, int y0, int y1, int cls)
{
    if (cls == C_NONE || cls == C_INELIGIBLE) return;
    fprintf(s->f, "<rect class=\"c%d\" x=\"%.6g\" y=\"%.6g\" width=\"%.6g\" "
            "height=\"%.6g\"/>\n", cls, s->ox + x0 * s->cw, s->oy + y0 * s->ch,
            (x1 - x0) * s->cw, (y1 - y0) * s->ch);
    s->rects++;
}

/* grid [rows][cols] of classes -> merged rects. */
static void emit_grid(svg_out *s, const unsigned char *grid, int rows,
                      int cols)
{
    run *open = (run *)malloc(sizeof(run) * (size_t)(cols + 1));
    run *next = (run *)malloc(sizeof(run) * (size_t)(cols + 1));
    int nopen = 0, r, i;
    for (r = 0; r <= rows; ++r) {
        int nnext = 0, c = 0, p = 0;
        while (r < rows && c < cols) { /* runs of row r */
            int c0 = c, cls = grid[(size_t)r * cols + c];
            while (c < cols && grid[(size_t)r * cols + c] == cls) ++c;
            next[nnext].x0 = c0;
            next[nnext].x1 = c;
            next[nnext].y0 = r;
            next[nnext].cls = cls;
            ++nnext;
        }
        /* Continue open rects that match a run exactly; close the rest. */
        for (i = 0; i < nnext; ++i) {
            while (p < nopen && open[p].x0 < next[i].x0) {
                emit_rect(s, open[p].x0, open[p].x1, open[p].y0, r, open[p].cls);
                ++p;
            }
            if (p < nopen && open[p].x0 == next[i].x0 &&
                open[p].x1 == next[i].x1 && open[p].cls == next[i].cls) {
                next[i].y0 = open[p].y0;
                ++p;
            }
        }
        for (; p < nopen; ++p)
            emit_rect(s, open[p].x0, open[p].x1, open[p].y0, r, open[p].cls);
        memcpy(open, next, sizeof(run) * (size_t)nnext);
        nopen = nnext;
    }
    free(open);
    free(next);
}

static void svg_begin(FILE *f, int width, int height)
{
    int i;
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" "
            "height=\"%d\" viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" "
            "font-size=\"12\">\n<style>\nrect{shape-rendering:crispEdges}\n",
            width, height, width, height);
    for (i = 1; i < N_CLASS; ++i)
        fprintf(f, ".c%d{fill:%s}\n", i, class_colour[i]);
    fprintf(f, "</style>\n<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" "
            "fill=\"#ffffff\"/>\n", width, height);
}

static void legend_item(FILE *f, double x, double y, int cls, const char *text)
{
    fprintf(f, "<rect class=\"c%d\" x=\"%.6g\" y=\"%.6g\" width=\"14\" "
            "height=\"14\" stroke=\"#555555\" stroke-width=\"0.5\"/>\n"
            "<text x=\"%.6g\" y=\"%.6g\">%s</text>\n",
            cls, x, y, x + 20, y + 11.5, text);
}

/* Axis ticks every `step` tokens along a side of `len` tokens. */
static void axis(FILE *f, int horizontal, double ox, double oy, double px,
                 int len, int step)
{
    int v;
    for (v = 0; v <= len; v += step) {
        double p = (horizontal ? ox : oy) + v * px;
        if (horizontal)
            fprintf(f, "<line x1=\"%.6g\" y1=\"%.6g\" x2=\"%.6g\" y2=\"%.6g\" "
                    "stroke=\"#333333\"/>\n<text x=\"%.6g\" y=\"%.6g\" "
                    "text-anchor=\"middle\" font-size=\"10\">%d</text>\n",
                    p, oy - 4, p, oy, p, oy - 7, v);
        else
            fprintf(f, "<line x1=\"%.6g\" y1=\"%.6g\" x2=\"%.6g\" y2=\"%.6g\" "
                    "stroke=\"#333333\"/>\n<text x=\"%.6g\" y=\"%.6g\" "
                    "text-anchor=\"end\" font-size=\"10\">%d</text>\n",
                    ox - 4, p, ox, p, ox - 7, p + 3.5, v);
    }
}

static int nice_step(int len, int lp)
{
    int step = lp > 0 ? lp : 1;
    while (len / step > 8) step *= 2;
    return step;
}

/* ---- selection helpers -------------------------------------------------- */

/* Is selection block j forced for a unit whose last query is t_last? */
static int is_forced(const nsa_config *c, int j, int t_last)
{
    int cur = t_last / c->lp;
    if ((int64_t)j * c->lp > t_last) return 0;
    return j < c->n_init || (j <= cur && j > cur - c->n_local);
}

/* ---- main --------------------------------------------------------------- */

int main(int argc, char **argv)
{
    pic_opts o;
    nsa_config cfg;
    nsa_batch b;
    nsa_sizes sz;
    nsa_status st;
    int32_t cu[2];
    float *q, *k, *v, *kc, *vc, *scores;
    int32_t *sel_idx, *sel_cnt;
    void *ws;
    size_t ws_bytes = 0;
    FILE *f;
    int T, nblk, units, i;
    char title[256], title2[256];

    if (!parse_opts(argc, argv, &o)) return 2;
    if (!preset_config(o.preset, &cfg)) {
        fprintf(stderr, "nsa_picture: unknown preset '%s' (paper, fla, tile64,"
                " tile128)\n", o.preset);
        return 2;
    }
    if (o.bq > 0) cfg.bq = o.bq;
    if (o.w > 0) cfg.w = o.w;
    if (o.n > 0) cfg.n = o.n;
    T = o.T;
    cu[0] = 0;
    cu[1] = T;

    memset(&b, 0, sizeof b);
    b.B = 1;
    b.T = T;
    b.TQ = T;
    b.cu_seqlens = cu;
    b.H = o.H;
    b.Hkv = o.Hkv;
    b.Dk = b.Dv = o.D;
    b.dtype = NSA_FP32;
    q = (float *)malloc(sizeof(float) * (size_t)T * o.H * o.D);
    k = (float *)malloc(sizeof(float) * (size_t)T * o.Hkv * o.D);
    v = (float *)malloc(sizeof(float) * (size_t)T * o.Hkv * o.D);
    if (!q || !k || !v) { fprintf(stderr, "nsa_picture: out of memory\n"); return 1; }
    make_inputs(&o, cfg.lp, q, k, v);
    b.q = q;
    b.k = k;
    b.v = v;

    if ((st = nsa_sizes_get(&cfg, &b, &sz)) != NSA_OK ||
        (st = nsa_ref_workspace_size(&cfg, &b, &ws_bytes)) != NSA_OK) {
        fprintf(stderr, "nsa_picture: %s: %s\n", nsa_status_string(st),
                nsa_last_error());
        return 1;
    }
    nblk = (int)sz.max_slc_blocks;
    units = (int)sz.units;
    kc = (float *)malloc(sizeof(float) * (size_t)(sz.k_cmp + 1));
    vc = (float *)malloc(sizeof(float) * (size_t)(sz.v_cmp + 1));
    scores = (float *)malloc(sizeof(float) * (size_t)(sz.block_mask + 1));
    sel_idx = (int32_t *)malloc(sizeof(int32_t) * (size_t)(sz.sel_idx + 1));
    sel_cnt = (int32_t *)malloc(sizeof(int32_t) * (size_t)(sz.sel_count + 1));
    ws = malloc(ws_bytes + 1);
    if (!kc || !vc || !scores || !sel_idx || !sel_cnt || !ws) {
        fprintf(stderr, "nsa_picture: out of memory\n");
        return 1;
    }
    if ((st = nsa_ref_compress(&cfg, &b, kc, vc)) != NSA_OK ||
        (st = nsa_ref_block_scores(&cfg, &b, kc, scores, ws, ws_bytes)) != NSA_OK ||
        (st = nsa_ref_select(&cfg, &b, kc, sel_idx, sel_cnt, ws, ws_bytes)) != NSA_OK) {
        fprintf(stderr, "nsa_picture: %s: %s\n", nsa_status_string(st),
                nsa_last_error());
        return 1;
    }

    f = o.out ? fopen(o.out, "w") : stdout;
    if (!f) {
        fprintf(stderr, "nsa_picture: cannot write '%s'\n", o.out);
        return 1;
    }
    sprintf(title, "NSA, preset %s: one sequence of T=%d, kv head %d of %d "
            "(G=%d query heads), seed %llu", o.preset, T, o.head, o.Hkv,
            o.H / o.Hkv, o.seed);
    sprintf(title2, "l=%d d=%d l'=%d n=%d (n_init=%d, n_local=%d) w=%d "
            "bq=%d, %s scoring", cfg.l, cfg.d, cfg.lp, cfg.n, cfg.n_init,
            cfg.n_local, cfg.w, cfg.bq,
            cfg.score_mode == NSA_SCORE_PROBS ? "probs" : "logits");

    if (!o.tiles) {
        /* (query, key) plane, cells of c x c tokens. */
        const int c = o.cell > 0 ? o.cell : (T + 127) / 128;
        const int n = (T + c - 1) / c;
        const double plot = 512.0, px = plot / n;
        const double ox = 60, oy = 76;
        const int width = (int)(ox + plot + 20), height = (int)(oy + plot + 90);
        unsigned char *grid = (unsigned char *)calloc((size_t)n * n, 1);
        unsigned char *blk = (unsigned char *)malloc((size_t)nblk + 1);
        long *cnt = (long *)calloc((size_t)n * 5, sizeof(long));
        svg_out s;
        int R, t, sidx;
        for (R = 0; R < n; ++R) {
            memset(cnt, 0, sizeof(long) * (size_t)n * 5);
            for (t = R * c; t < T && t < (R + 1) * c; ++t) {
                const int u = t / cfg.bq;
                const int t_last = (u + 1) * cfg.bq - 1 < T - 1
                                       ? (u + 1) * cfg.bq - 1 : T - 1;
                const int64_t base = ((int64_t)u * o.Hkv + o.head);
                /* last key of the last compressed block t sees (nsa.h's rule) */
                const int64_t nvis = nsa_cmp_visible_count(t, cfg.l, cfg.d);
                const int cmp_reach = nvis > 0
                    ? (int)nsa_cmp_first_query(nvis - 1, cfg.l, cfg.d) : -1;
                memset(blk, 0, (size_t)nblk + 1);
                for (i = 0; i < sel_cnt[base] && i < cfg.n; ++i) {
                    int j = sel_idx[base * cfg.n + i];
                    if (j >= 0 && j < nblk)
                        blk[j] = is_forced(&cfg, j, t_last) ? 2 : 1;
                }
                for (sidx = 0; sidx < T; ++sidx) {
                    int cls = C_NONE;
                    if (sidx <= t) {
                        int sb = blk[sidx / cfg.lp];
                        if ((cfg.branches & NSA_BRANCH_SLC) && sb == 2)
                            cls = C_FORCED;
                        else if ((cfg.branches & NSA_BRANCH_WIN) &&
                                 sidx > t - cfg.w)
                            cls = C_WIN;
                        else if ((cfg.branches & NSA_BRANCH_SLC) && sb == 1)
                            cls = C_SLC;
                        else if ((cfg.branches & NSA_BRANCH_CMP) &&
                                 sidx <= cmp_reach)
                            cls = C_CMP;
                    }
                    cnt[(sidx / c) * 5 + cls]++;
                }
            }
            for (i = 0; i < n; ++i) { /* majority, ties to higher priority */
                int best = 0, cl;
                for (cl = 1; cl < 5; ++cl)
                    if (cnt[i * 5 + cl] >= cnt[i * 5 + best]) best = cl;
                grid[(size_t)R * n + i] = (unsigned char)best;
            }
        }
        svg_begin(f, width, height);
        fprintf(f, "<text x=\"10\" y=\"16\">%s</text>\n<text x=\"10\" "
                "y=\"32\">%s</text>\n", title, title2);
        fprintf(f, "<text x=\"%.6g\" y=\"54\" text-anchor=\"middle\">key "
                "position s</text>\n", ox + plot / 2);
        fprintf(f, "<text transform=\"translate(16 %.6g) rotate(-90)\" "
                "text-anchor=\"middle\">query position t</text>\n",
                oy + plot / 2);
        s.f = f;
        s.ox = ox;
        s.oy = oy;
        s.cw = s.ch = px;
        s.rects = 0;
        fprintf(f, "<g>\n");
        emit_grid(&s, grid, n, n);
        fprintf(f, "</g>\n");
        fprintf(f, "<rect x=\"%.6g\" y=\"%.6g\" width=\"%.6g\" height=\"%.6g\" "
                "fill=\"none\" stroke=\"#333333\"/>\n", ox, oy, plot, plot);
        axis(f, 1, ox, oy, plot / T, T, nice_step(T, cfg.lp));
        axis(f, 0, ox, oy, plot / T, T, nice_step(T, cfg.lp));
        legend_item(f, ox, oy + plot + 14, C_CMP,
                    "compressed: keys of the visible compressed blocks");
        legend_item(f, ox + 360, oy + plot + 14, C_WIN, "window");
        legend_item(f, ox, oy + plot + 36, C_SLC, "selected block");
        legend_item(f, ox + 150, oy + plot + 36, C_FORCED,
                    "forced block (initial / local)");
        fprintf(f, "<text x=\"%.6g\" y=\"%.6g\" font-size=\"10\">one cell = "
                "%d x %d (query, key) pairs, coloured by the class most of "
                "them have;</text>\n<text x=\"%.6g\" y=\"%.6g\" "
                "font-size=\"10\">a pair in several branches takes the first "
                "of: forced, window, selected, compressed</text>\n",
                ox, oy + plot + 66, c, c, ox, oy + plot + 80);
        fprintf(f, "</svg>\n");
        free(grid);
        free(blk);
        free(cnt);
    } else {
        /* units x selection blocks, aggregated to at most 256 rows. */
        const int rg = (units + 255) / 256;
        const int rows = (units + rg - 1) / rg;
        const double plot_w = 512.0, cw = plot_w / nblk;
        const double ch = rows * 6.0 > 512.0 ? 512.0 / rows : 6.0;
        const double plot_h = ch * rows;
        const double ox = 70, oy = 76;
        const int width = (int)(ox + plot_w + 20);
        const int height = (int)(oy + plot_h + 96);
        unsigned char *grid = (unsigned char *)calloc((size_t)rows * nblk, 1);
        long *cnt = (long *)calloc((size_t)nblk * N_CLASS, sizeof(long));
        unsigned char *blk = (unsigned char *)malloc((size_t)nblk + 1);
        svg_out s;
        int R, u, j, step;
        for (R = 0; R < rows; ++R) {
            memset(cnt, 0, sizeof(long) * (size_t)nblk * N_CLASS);
            for (u = R * rg; u < units && u < (R + 1) * rg; ++u) {
                const int t_last = (u + 1) * cfg.bq - 1 < T - 1
                                       ? (u + 1) * cfg.bq - 1 : T - 1;
                const int64_t base = ((int64_t)u * o.Hkv + o.head);
                const float *sc = scores + base * nblk;
                int n_other = 0;
                memset(blk, 0, (size_t)nblk + 1);
                for (i = 0; i < sel_cnt[base] && i < cfg.n; ++i) {
                    int jj = sel_idx[base * cfg.n + i];
                    if (jj >= 0 && jj < nblk)
                        blk[jj] = is_forced(&cfg, jj, t_last) ? 2 : 1;
                }
                for (j = 0; j < nblk; ++j)
                    if (!blk[j] && (int64_t)j * cfg.lp <= t_last) ++n_other;
                for (j = 0; j < nblk; ++j) {
                    int cls;
                    if (blk[j] == 2) cls = C_FORCED;
                    else if (blk[j] == 1) cls = C_SLC;
                    else if ((int64_t)j * cfg.lp > t_last) cls = C_INELIGIBLE;
                    else { /* rank among the eligible, unselected blocks */
                        int below = 0, jj;
                        for (jj = 0; jj < nblk; ++jj)
                            if (!blk[jj] && (int64_t)jj * cfg.lp <= t_last &&
                                (sc[jj] < sc[j] ||
                                 (sc[jj] == sc[j] && jj > j)))
                                ++below;
                        cls = C_GREY0 + (int)((int64_t)below * N_GREY /
                                              (n_other > 0 ? n_other : 1));
                        if (cls >= C_GREY0 + N_GREY) cls = C_GREY0 + N_GREY - 1;
                    }
                    cnt[(size_t)j * N_CLASS + cls]++;
                }
            }
            for (j = 0; j < nblk; ++j) {
                int best = 0, cl;
                for (cl = 1; cl < N_CLASS; ++cl)
                    if (cnt[(size_t)j * N_CLASS + cl] >
                        cnt[(size_t)j * N_CLASS + best]) best = cl;
                grid[(size_t)R * nblk + j] = (unsigned char)best;
            }
        }
        svg_begin(f, width, height);
        fprintf(f, "<text x=\"10\" y=\"16\">%s</text>\n<text x=\"10\" "
                "y=\"32\">%s</text>\n", title, title2);
        fprintf(f, "<text x=\"%.6g\" y=\"54\" text-anchor=\"middle\">selection "
                "block j (keys j*l' .. j*l'+l'-1)</text>\n", ox + plot_w / 2);
        fprintf(f, "<text transform=\"translate(16 %.6g) rotate(-90)\" "
                "text-anchor=\"middle\">%s</text>\n", oy + plot_h / 2,
                cfg.bq > 1 ? "query tile (bq queries)" : "query");
        s.f = f;
        s.ox = ox;
        s.oy = oy;
        s.cw = cw;
        s.ch = ch;
        s.rects = 0;
        fprintf(f, "<g>\n");
        emit_grid(&s, grid, rows, nblk);
        fprintf(f, "</g>\n");
        /* Thin grid lines between blocks when they are wide enough. */
        if (cw >= 6)
            for (j = 1; j < nblk; ++j)
                fprintf(f, "<line x1=\"%.6g\" y1=\"%.6g\" x2=\"%.6g\" "
                        "y2=\"%.6g\" stroke=\"#ffffff\" stroke-width=\"0.5\"/>\n",
                        ox + j * cw, oy, ox + j * cw, oy + plot_h);
        fprintf(f, "<rect x=\"%.6g\" y=\"%.6g\" width=\"%.6g\" height=\"%.6g\" "
                "fill=\"none\" stroke=\"#333333\"/>\n", ox, oy, plot_w, plot_h);
        step = 1;
        while (nblk / step > 16) step *= 2;
        for (j = 0; j < nblk; j += step)
            fprintf(f, "<text x=\"%.6g\" y=\"%.6g\" text-anchor=\"middle\" "
                    "font-size=\"10\">%d</text>\n", ox + (j + 0.5) * cw,
                    oy - 6, j);
        step = 1;
        while (rows / step > 16) step *= 2;
        for (R = 0; R < rows; R += step)
            fprintf(f, "<text x=\"%.6g\" y=\"%.6g\" text-anchor=\"end\" "
                    "font-size=\"10\">t&#8804;%d</text>\n", ox - 4,
                    oy + (R + 0.5) * ch + 3.5,
                    ((R * rg + rg) * cfg.bq - 1 < T - 1
                         ? (R * rg + rg) * cfg.bq - 1 : T - 1));
        legend_item(f, ox, oy + plot_h + 14, C_SLC, "selected block");
        legend_item(f, ox + 150, oy + plot_h + 14, C_FORCED,
                    "forced block (initial / local)");
        legend_item(f, ox, oy + plot_h + 36, C_GREY0 + 1, "");
        legend_item(f, ox + 14, oy + plot_h + 36, C_GREY0 + 3, "");
        legend_item(f, ox + 28, oy + plot_h + 36, C_GREY0 + 4,
                    "eligible, not selected (darker = higher block score)");
        fprintf(f, "<text x=\"%.6g\" y=\"%.6g\">white: not eligible "
                "(j*l' &gt; t_last, the unit's last query)</text>\n",
                ox, oy + plot_h + 62);
        if (rg > 1)
            fprintf(f, "<text x=\"%.6g\" y=\"%.6g\" font-size=\"10\">one row "
                    "= %d selection units, coloured by the class most of them "
                    "have</text>\n", ox, oy + plot_h + 82, rg);
        fprintf(f, "</svg>\n");
        free(grid);
        free(cnt);
        free(blk);
    }
    if (ferror(f) || (o.out && fclose(f) != 0)) {
        fprintf(stderr, "nsa_picture: write error\n");
        return 1;
    }
    free(q);
    free(k);
    free(v);
    free(kc);
    free(vc);
    free(scores);
    free(sel_idx);
    free(sel_cnt);
    free(ws);
    return 0;
}
