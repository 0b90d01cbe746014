"""plot_results.py -- forward time against sequence length, log-log, as SVG.

Reads bench/results CSV files (header device,date,commit,preset,B,T,H,Hkv,
D,dtype,what,ms,floor_ms) and draws the forward of each nsa preset, each
one's floor (and with fwd_bwd, the run with the branch outputs kept,
fwd_bwd_o_branch), and the peers of the same file (dense cuDNN, the public Triton
NSA kernels). Plain Python, no plotting library.

usage: python3 bench/plot_results.py RESULTS.csv OUT.svg [--what fwd|fwd_bwd]"""
import csv
import math
import sys

W, H, L, R, TOP, BOT = 800, 460, 70, 270, 40, 50


def series(rows, what):
    """{label: [(T, ms)]} for nsa presets (what, and its floor) and peers."""
    out = {}
    for r in rows:
        try:
            T, ms = int(r["T"]), float(r["ms"])
        except ValueError:
            continue
        if r["commit"] == "peer":
            peer, kind = r["what"].split("_", 1)
            if kind != what:
                continue
            label = {"cudnn": "dense cuDNN", "xl": "Triton NSA (xl, paper, no window)",
                     "fla": "Triton NSA (fla, no window)"}.get(peer, peer)
            out.setdefault(label, []).append((T, ms))
        elif r["what"] == what + "_o_branch" and r["preset"] in ("paper", "fla", "tile"):
            out.setdefault("nsa " + r["preset"] + ", o_c kept", []).append((T, ms))
        elif r["what"] == what and r["preset"] in ("paper", "fla", "tile"):
            out.setdefault("nsa " + r["preset"], []).append((T, ms))
            if r["floor_ms"] and r["preset"] == "paper":
                out.setdefault("nsa paper: floor", []).append((T, float(r["floor_ms"])))
    return {k: sorted(v) for k, v in out.items()}


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    what = sys.argv[sys.argv.index("--what") + 1] if "--what" in sys.argv else "fwd"
    with open(sys.argv[1]) as f:
        rows = list(csv.DictReader(f))
    s = series(rows, what)
    if not s:
        sys.exit("no rows for " + what)
    ts = [t for v in s.values() for t, _ in v]
    ms = [m for v in s.values() for _, m in v]
    x0, x1 = math.log2(min(ts)) - 0.2, math.log2(max(ts)) + 0.2
    y0, y1 = math.floor(math.log10(min(ms))), math.ceil(math.log10(max(ms)))
    px = lambda t: L + (math.log2(t) - x0) / (x1 - x0) * (W - L - R)
    py = lambda m: H - BOT - (math.log10(m) - y0) / (y1 - y0) * (H - TOP - BOT)
    colors = ["#1f77b4", "#2ca02c", "#9467bd", "#7f7f7f", "#d62728", "#ff7f0e", "#8c564b"]
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{L}" y="22" font-size="14">{what.replace("_", "+")} time, B=1 H=64 Hkv=4 D=128 bf16, '
         f'{rows[0]["device"]}, {rows[0]["date"]}</text>']
    for e in range(y0, y1 + 1):
        y = py(10 ** e)
        o.append(f'<line x1="{L}" y1="{y:.1f}" x2="{W - R}" y2="{y:.1f}" stroke="#ddd"/>')
        o.append(f'<text x="{L - 8}" y="{y + 4:.1f}" text-anchor="end">{10 ** e:g} ms</text>')
    for t in sorted(set(ts)):
        x = px(t)
        o.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{H - BOT}" stroke="#eee"/>')
        o.append(f'<text x="{x:.1f}" y="{H - BOT + 16}" text-anchor="middle">{t // 1024}K</text>')
    o.append(f'<text x="{(L + W - R) / 2}" y="{H - 12}" text-anchor="middle">sequence length T</text>')
    for i, (label, pts) in enumerate(sorted(s.items())):
        c = colors[i % len(colors)]
        dash = ' stroke-dasharray="5,4"' if "floor" in label or "Triton" in label else ""
        path = " ".join(f"{px(t):.1f},{py(m):.1f}" for t, m in pts)
        o.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="2"{dash}/>')
        for t, m in pts:
            o.append(f'<circle cx="{px(t):.1f}" cy="{py(m):.1f}" r="3" fill="{c}"/>')
        y = TOP + 10 + 18 * i
        o.append(f'<line x1="{W - R + 12}" y1="{y}" x2="{W - R + 34}" y2="{y}" stroke="{c}" stroke-width="2"{dash}/>')
        o.append(f'<text x="{W - R + 40}" y="{y + 4}">{label}</text>')
    o.append("</svg>")
    with open(sys.argv[2], "w") as f:
        f.write("\n".join(o) + "\n")


if __name__ == "__main__":
    main()
