#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""chart.png of `make bench`: throughput, latency, connection rate (and accepts under a
connect flood) and memory per stack.

Usage: chart.py [--plain] CHART-DATA.json OUT.png

CHART-DATA.json is written by bench.py ({"summary": ..., "title": ...}).  With matplotlib
importable the chart is drawn with it; with --plain (or without matplotlib) a plain bar chart is
written with the standard library only (zlib + struct, a built-in 5x7 pixel font).
Bars are medians over the rounds; the whiskers span min..max.
"""

import json
import struct
import sys
import zlib

STACKS = [("C", "C vsock", (0x4c, 0x72, 0xb0)),
          ("C2", "C vsock again (calibration)", (0x93, 0xb4, 0xd8)),
          ("rvsock", "rvsock", (0xdd, 0x84, 0x52)),
          ("tcp", "TCP 127.0.0.1", (0x55, 0xa8, 0x68)), ("unix", "AF_UNIX", (0x81, 0x72, 0xb3))]

# (panel title, unit, [(group label, bench, metric)])
PANELS = [
    ("Throughput: vsock_perf rx, stream-bench delivered (higher is better)", "Gbit/s", [
        ("perf 4K", "perf_4K", "rx_gbit_s"), ("perf 64K", "perf_64K", "rx_gbit_s"),
        ("perf 1M", "perf_1M", "rx_gbit_s"), ("4 streams 64K", "stream4_64K", "tx_gbit_s"),
        ("1 stream 64K", "stream1_64K", "tx_gbit_s"),
        # --transport virtio: guest to host, one stream, delivered.
        ("to host 4K", "stream_4K", "tx_gbit_s"), ("to host 64K", "stream_64K", "tx_gbit_s"),
        ("to host 1M", "stream_1M", "tx_gbit_s")]),
    ("Round-trip latency (lower is better)", "us", [
        ("64 B median", "pingpong_64", "median_us"), ("64 B p99", "pingpong_64", "p99_us"),
        ("4K median", "pingpong_4K", "median_us"), ("4K p99", "pingpong_4K", "p99_us")]),
    ("Connection rate (higher is better)", "conn/s", [
        ("connect+accept+close", "connrate", "conn_per_s"),
        ("flood: accepted by a full listener", "connflood", "accept_per_s_overloaded")]),
    ("Kernel memory per idle pair (lower is better)", "bytes", [
        ("Slab", "pairs", "slab_bytes_per_pair"), ("slab objects", "pairs", "objs_bytes_per_pair"),
        ("AF_VSOCK cache", "pairs", "af_vsock_bytes_per_pair")]),
]


def num(v):
    """A short label for a value: 3 significant digits, whole numbers from 1000 up."""
    return "%.0f" % v if abs(v) >= 1000 else "%.3g" % v


def series(summary, bench, metric):
    """[(stack name, label, colour, median, min, max)] for the stacks that have this figure."""
    out = []
    for key, label, colour in STACKS:
        s = summary.get(key, {}).get(bench, {}).get(metric)
        if s:
            out.append((key, label, colour, s["median"], s["min"], s["max"]))
    return out


def panels(summary):
    for title, unit, groups in PANELS:
        gs = [(g, series(summary, b, m)) for g, b, m in groups]
        gs = [(g, s) for g, s in gs if s]
        if gs:
            yield title, unit, gs


def with_matplotlib(data, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ps = list(panels(data["summary"]))
    fig, axes = plt.subplots(len(ps), 1, figsize=(10, 3.6 * len(ps)), squeeze=False)
    for ax, (title, unit, gs) in zip(axes[:, 0], ps):
        width = 0.8 / max(len(ss) for _, ss in gs)
        seen = set()
        for gi, (_, ss) in enumerate(gs):
            for si, (key, label, colour, med, lo, hi) in enumerate(ss):
                x = gi + (si - (len(ss) - 1) / 2) * width
                ax.bar(x, med, width, color=["#%02x%02x%02x" % colour],
                       yerr=[[med - lo], [hi - med]], capsize=3,
                       label=None if key in seen else label)
                seen.add(key)
                ax.annotate(num(med), (x, hi), ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(gs)))
        ax.set_xticklabels([g for g, _ in gs])
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.legend(fontsize=8)
        ax.margins(y=0.15)
        if len(gs) == 1:
            ax.set_xlim(-1, 1)
    fig.suptitle(data.get("title", ""))
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(out, dpi=100)


# ---- plain PNG with the standard library ---------------------------------------------------

# 5x7 glyphs, rows top to bottom ('#' set); lower case is drawn as upper case.
FONT = {
    '0': ['.###.', '#...#', '#..##', '#.#.#', '##..#', '#...#', '.###.'],
    '1': ['..#..', '.##..', '..#..', '..#..', '..#..', '..#..', '.###.'],
    '2': ['.###.', '#...#', '....#', '...#.', '..#..', '.#...', '#####'],
    '3': ['#####', '...#.', '..#..', '...#.', '....#', '#...#', '.###.'],
    '4': ['...#.', '..##.', '.#.#.', '#..#.', '#####', '...#.', '...#.'],
    '5': ['#####', '#....', '####.', '....#', '....#', '#...#', '.###.'],
    '6': ['..##.', '.#...', '#....', '####.', '#...#', '#...#', '.###.'],
    '7': ['#####', '....#', '...#.', '..#..', '.#...', '.#...', '.#...'],
    '8': ['.###.', '#...#', '#...#', '.###.', '#...#', '#...#', '.###.'],
    '9': ['.###.', '#...#', '#...#', '.####', '....#', '...#.', '.##..'],
    'A': ['.###.', '#...#', '#...#', '#####', '#...#', '#...#', '#...#'],
    'B': ['####.', '#...#', '#...#', '####.', '#...#', '#...#', '####.'],
    'C': ['.###.', '#...#', '#....', '#....', '#....', '#...#', '.###.'],
    'D': ['###..', '#..#.', '#...#', '#...#', '#...#', '#..#.', '###..'],
    'E': ['#####', '#....', '#....', '####.', '#....', '#....', '#####'],
    'F': ['#####', '#....', '#....', '####.', '#....', '#....', '#....'],
    'G': ['.###.', '#...#', '#....', '#.###', '#...#', '#...#', '.####'],
    'H': ['#...#', '#...#', '#...#', '#####', '#...#', '#...#', '#...#'],
    'I': ['.###.', '..#..', '..#..', '..#..', '..#..', '..#..', '.###.'],
    'J': ['..###', '...#.', '...#.', '...#.', '...#.', '#..#.', '.##..'],
    'K': ['#...#', '#..#.', '#.#..', '##...', '#.#..', '#..#.', '#...#'],
    'L': ['#....', '#....', '#....', '#....', '#....', '#....', '#####'],
    'M': ['#...#', '##.##', '#.#.#', '#.#.#', '#...#', '#...#', '#...#'],
    'N': ['#...#', '#...#', '##..#', '#.#.#', '#..##', '#...#', '#...#'],
    'O': ['.###.', '#...#', '#...#', '#...#', '#...#', '#...#', '.###.'],
    'P': ['####.', '#...#', '#...#', '####.', '#....', '#....', '#....'],
    'Q': ['.###.', '#...#', '#...#', '#...#', '#.#.#', '#..#.', '.##.#'],
    'R': ['####.', '#...#', '#...#', '####.', '#.#..', '#..#.', '#...#'],
    'S': ['.####', '#....', '#....', '.###.', '....#', '....#', '####.'],
    'T': ['#####', '..#..', '..#..', '..#..', '..#..', '..#..', '..#..'],
    'U': ['#...#', '#...#', '#...#', '#...#', '#...#', '#...#', '.###.'],
    'V': ['#...#', '#...#', '#...#', '#...#', '#...#', '.#.#.', '..#..'],
    'W': ['#...#', '#...#', '#...#', '#.#.#', '#.#.#', '#.#.#', '.#.#.'],
    'X': ['#...#', '#...#', '.#.#.', '..#..', '.#.#.', '#...#', '#...#'],
    'Y': ['#...#', '#...#', '.#.#.', '..#..', '..#..', '..#..', '..#..'],
    'Z': ['#####', '....#', '...#.', '..#..', '.#...', '#....', '#####'],
    ' ': ['.....', '.....', '.....', '.....', '.....', '.....', '.....'],
    '.': ['.....', '.....', '.....', '.....', '.....', '.##..', '.##..'],
    ',': ['.....', '.....', '.....', '.....', '.##..', '..#..', '.#...'],
    '-': ['.....', '.....', '.....', '.###.', '.....', '.....', '.....'],
    '+': ['.....', '..#..', '..#..', '#####', '..#..', '..#..', '.....'],
    '=': ['.....', '.....', '#####', '.....', '#####', '.....', '.....'],
    '/': ['....#', '....#', '...#.', '..#..', '.#...', '#....', '#....'],
    ':': ['.....', '.##..', '.##..', '.....', '.##..', '.##..', '.....'],
    '(': ['...#.', '..#..', '.#...', '.#...', '.#...', '..#..', '...#.'],
    ')': ['.#...', '..#..', '...#.', '...#.', '...#.', '..#..', '.#...'],
    '[': ['.###.', '.#...', '.#...', '.#...', '.#...', '.#...', '.###.'],
    ']': ['.###.', '...#.', '...#.', '...#.', '...#.', '...#.', '.###.'],
    '%': ['##...', '##..#', '...#.', '..#..', '.#...', '#..##', '...##'],
    '_': ['.....', '.....', '.....', '.....', '.....', '.....', '#####'],
    '<': ['...#.', '..#..', '.#...', '#....', '.#...', '..#..', '...#.'],
    '>': ['.#...', '..#..', '...#.', '....#', '...#.', '..#..', '.#...'],
    '?': ['.###.', '#...#', '....#', '...#.', '..#..', '.....', '..#..'],
}


class Canvas:
    def __init__(self, w, h):
        self.w, self.h = w, h
        self.px = bytearray(b"\xff" * (w * h * 3))

    def rect(self, x0, y0, x1, y1, c):
        x0, x1 = max(0, int(min(x0, x1))), min(self.w, int(max(x0, x1)))
        y0, y1 = max(0, int(min(y0, y1))), min(self.h, int(max(y0, y1)))
        row = bytes(c) * (x1 - x0)
        for y in range(y0, y1):
            i = (y * self.w + x0) * 3
            self.px[i:i + len(row)] = row

    def text(self, x, y, s, c=(0, 0, 0), scale=1, center=False):
        if center:
            x -= len(s) * 6 * scale // 2
        for ch in s:
            g = FONT.get(ch.upper(), FONT["?"])
            for ry, row in enumerate(g):
                for rx, bit in enumerate(row):
                    if bit == "#":
                        self.rect(x + rx * scale, y + ry * scale, x + (rx + 1) * scale,
                                  y + (ry + 1) * scale, c)
            x += 6 * scale

    def png(self):
        raw = b"".join(b"\x00" + bytes(self.px[y * self.w * 3:(y + 1) * self.w * 3])
                       for y in range(self.h))

        def chunk(t, d):
            return struct.pack(">I", len(d)) + t + d + struct.pack(">I",
                                                                  zlib.crc32(t + d) & 0xffffffff)
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", self.w, self.h, 8, 2,
                                                                   0, 0, 0)) +
                chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def plain(data, out):
    ps = list(panels(data["summary"]))
    W, PH, TOPM = 1000, 300, 50
    cv = Canvas(W, TOPM + PH * len(ps) + 30)
    cv.text(20, 15, data.get("title", ""), scale=2)
    # Legend.
    x = 20
    for _, label, colour in STACKS:
        cv.rect(x, TOPM + PH * len(ps) + 8, x + 12, TOPM + PH * len(ps) + 20, colour)
        cv.text(x + 16, TOPM + PH * len(ps) + 10, label)
        x += 30 + 6 * len(label)
    for pi, (title, unit, gs) in enumerate(ps):
        y0 = TOPM + pi * PH
        cv.text(20, y0 + 5, "%s (%s)" % (title, unit), scale=1)
        base, top = y0 + PH - 40, y0 + 30
        left, right = 60, W - 20
        vmax = max(hi for _, ss in gs for s in ss for hi in [s[5]]) or 1.0
        cv.rect(left, top, left + 1, base, (0, 0, 0))
        cv.rect(left, base, right, base + 1, (0, 0, 0))
        cv.text(5, top, num(vmax))
        cv.rect(left - 4, top, left, top + 1, (0, 0, 0))
        gw = (right - left) / max(len(gs), 2)
        bw = gw * 0.8 / max(len(ss) for _, ss in gs)
        for gi, (g, ss) in enumerate(gs):
            gx = left + gi * gw + (gw - bw * len(ss)) / 2
            for si, (key, label, colour, med, lo, hi) in enumerate(ss):
                x0 = gx + si * bw
                h = (base - top) * med / vmax
                cv.rect(x0 + 2, base - h, x0 + bw - 2, base, colour)
                ylo = base - (base - top) * lo / vmax
                yhi = base - (base - top) * hi / vmax
                xm = x0 + bw / 2
                cv.rect(xm, yhi, xm + 1, ylo + 1, (0, 0, 0))
                cv.rect(xm - 4, yhi, xm + 5, yhi + 1, (0, 0, 0))
                cv.rect(xm - 4, ylo, xm + 5, ylo + 1, (0, 0, 0))
                cv.text(int(xm), int(yhi) - 10, num(med), center=True)
            cv.text(int(left + gi * gw + gw / 2), base + 10, g, center=True)
    with open(out, "wb") as f:
        f.write(cv.png())


def main():
    argv = sys.argv[1:]
    force_plain = "--plain" in argv
    argv = [a for a in argv if a != "--plain"]
    if len(argv) != 2:
        sys.exit(__doc__)
    with open(argv[0]) as f:
        data = json.load(f)
    if not force_plain:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            force_plain = True
    if force_plain:
        plain(data, argv[1])
    else:
        with_matplotlib(data, argv[1])


if __name__ == "__main__":
    main()
