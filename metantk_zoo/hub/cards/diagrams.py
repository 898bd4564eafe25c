"""Cell diagrams of a genotype: both cells side by side as SVG text and as a PNG drawn with Pillow (no graphviz).

One layout, two renderers; the same genotype always gives the same bytes. MetaNTK-NAS:
https://arxiv.org/abs/2203.09137.
"""

from __future__ import annotations

from typing import Any

from ...genotype import Genotype

__all__ = ["cell_diagram_svg", "cell_diagram_png"]

# inputs on the left, nodes on a diagonal, output right
_OP_COLOURS = {
    "skip_connect": "#7f7f7f",
    "sep_conv_3x3": "#1f77b4",
    "dil_conv_3x3": "#2ca02c",
    "conv_3x3": "#d62728",
    "conv_1x5_5x1": "#9467bd",
    "max_pool_3x3BN": "#ff7f0e",
    "avg_pool_3x3BN": "#8c564b",
}
_PANEL_W, _PANEL_H, _R = 640, 330, 24


def _layout(genotype: Genotype, which: str, x0: int) -> dict[str, Any]:
    nodes = genotype.normal if which == "normal" else genotype.reduce
    # zig-zag node positions: no edge passes through a node it does not touch
    pos = {0: (x0 + 60, 95), 1: (x0 + 60, 255), 2: (x0 + 225, 75), 3: (x0 + 335, 255), 4: (x0 + 475, 150)}
    out = (x0 + 570, 285)
    labels = {0: "c_{k-2}", 1: "c_{k-1}", 2: "0", 3: "1", 4: "2"}
    edges = []
    for n, node in enumerate(nodes):
        for op, idx in node:
            edges.append({"src": pos[idx], "dst": pos[n + 2], "op": op, "t": 0.5})
    title = "normal cell" if which == "normal" else "reduction cell"
    return {"title": title, "x0": x0, "pos": pos, "labels": labels, "out": out, "edges": edges}


def _point(a: tuple[int, int], b: tuple[int, int], t: float) -> tuple[float, float]:
    return a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t


def _trim(a: tuple[int, int], b: tuple[int, int], r: float) -> tuple[tuple[float, float], tuple[float, float]]:
    dx, dy = b[0] - a[0], b[1] - a[1]
    d = max((dx * dx + dy * dy) ** 0.5, 1e-6)
    return (a[0] + dx / d * r, a[1] + dy / d * r), (b[0] - dx / d * r, b[1] - dy / d * r)


def cell_diagram_svg(genotype: Genotype, title: str = "") -> str:
    """Both cells side by side as standalone SVG text (deterministic: same genotype, same bytes)."""
    width, height = 2 * _PANEL_W, _PANEL_H + (30 if title else 0)
    dy = 30 if title else 0
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           'font-family="DejaVu Sans, Helvetica, Arial, sans-serif">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#333"/></marker></defs>',
           f'<rect width="{width}" height="{height}" fill="white"/>']
    if title:
        out.append(f'<text x="{width // 2}" y="22" font-size="18" font-weight="bold" text-anchor="middle">'
                   f"{_esc(title)}</text>")
    out.append(f'<g transform="translate(0,{dy})">')
    for i, which in enumerate(("normal", "reduce")):
        lay = _layout(genotype, which, i * _PANEL_W)
        x0 = lay["x0"]
        out.append(f'<text x="{x0 + _PANEL_W // 2}" y="24" font-size="16" font-weight="bold" text-anchor="middle">'
                   f'{lay["title"]}</text>')
        for e in lay["edges"]:
            (x1, y1), (x2, y2) = _trim(e["src"], e["dst"], _R + 2)
            colour = _OP_COLOURS[e["op"]]
            out.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour}" '
                       'stroke-width="2.5" marker-end="url(#arrow)"/>')
        for n in (2, 3, 4):
            (x1, y1), (x2, y2) = _trim(lay["pos"][n], lay["out"], _R + 2)
            out.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="#999" '
                       'stroke-width="1.5" stroke-dasharray="5,4" marker-end="url(#arrow)"/>')
        for e in lay["edges"]:
            lx, ly = _point(e["src"], e["dst"], e["t"])
            w = 7.2 * len(e["op"]) + 8
            out.append(f'<rect x="{lx - w / 2:.1f}" y="{ly - 10:.1f}" width="{w:.1f}" height="18" rx="4" fill="white" '
                       f'stroke="{_OP_COLOURS[e["op"]]}" stroke-width="1"/>')
            out.append(f'<text x="{lx:.1f}" y="{ly + 4:.1f}" font-size="12" text-anchor="middle" '
                       f'fill="{_OP_COLOURS[e["op"]]}">{e["op"]}</text>')
        for n, (x, y) in lay["pos"].items():
            fill = "#e8f0fe" if n < 2 else "#fff4d6"
            out.append(f'<circle cx="{x}" cy="{y}" r="{_R}" fill="{fill}" stroke="#333" stroke-width="1.5"/>')
            out.append(f'<text x="{x}" y="{y + 5}" font-size="{12 if n < 2 else 15}" text-anchor="middle">'
                       f'{_esc(lay["labels"][n])}</text>')
        ox, oy = lay["out"]
        out.append(f'<rect x="{ox - 34}" y="{oy - 20}" width="68" height="40" rx="8" fill="#e6f4ea" stroke="#333" '
                   'stroke-width="1.5"/>')
        out.append(f'<text x="{ox}" y="{oy + 5}" font-size="14" text-anchor="middle">c_{{k}}</text>')
    out.append("</g></svg>")
    return "\n".join(out) + "\n"


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def cell_diagram_png(genotype: Genotype, title: str = "", scale: int = 2) -> bytes:
    """The same diagram as PNG bytes, drawn with Pillow (for places that cannot show SVG)."""
    from io import BytesIO

    dy = 30 if title else 0
    width, height = 2 * _PANEL_W, _PANEL_H + dy
    canvas = _PngCanvas(width, height, dy, scale)
    if title:
        canvas.draw.text((width * scale / 2, 14 * scale), title, fill="black", font=canvas.font(18), anchor="mm")
    for i, which in enumerate(("normal", "reduce")):
        _draw_png_panel(canvas, _layout(genotype, which, i * _PANEL_W))
    buf = BytesIO()
    canvas.img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


class _PngCanvas:
    """A Pillow image in diagram coordinates: ``s`` maps a point to pixels (``scale``, title offset ``dy``)."""

    def __init__(self, width: int, height: int, dy: int, scale: int):
        from PIL import Image, ImageDraw

        self.dy, self.scale = dy, scale
        self.img = Image.new("RGB", (width * scale, height * scale), "white")
        self.draw = ImageDraw.Draw(self.img)

    def font(self, size: int) -> Any:
        from PIL import ImageFont

        try:
            return ImageFont.load_default(size=size * self.scale)
        except TypeError:  # Pillow < 10.1 has no sized default font
            return ImageFont.load_default()

    def s(self, p: tuple[float, float]) -> tuple[float, float]:
        return p[0] * self.scale, (p[1] + self.dy) * self.scale

    def arrow(self, a: tuple[float, float], b: tuple[float, float], colour: str, width_px: float,
              dashed: bool = False) -> None:
        s, draw = self.s, self.draw
        if dashed:
            n = 12
            for k in range(0, n, 2):
                draw.line([s(_point(a, b, k / n)), s(_point(a, b, (k + 1) / n))], fill=colour,
                          width=int(width_px * self.scale))
        else:
            draw.line([s(a), s(b)], fill=colour, width=int(width_px * self.scale))
        dx, dy_ = b[0] - a[0], b[1] - a[1]
        d = max((dx * dx + dy_ * dy_) ** 0.5, 1e-6)
        ux, uy = dx / d, dy_ / d
        tip = b
        left = (b[0] - 9 * ux + 4.5 * uy, b[1] - 9 * uy - 4.5 * ux)
        right = (b[0] - 9 * ux - 4.5 * uy, b[1] - 9 * uy + 4.5 * ux)
        draw.polygon([s(tip), s(left), s(right)], fill="#333")


def _draw_png_panel(canvas: _PngCanvas, lay: dict[str, Any]) -> None:
    """One cell of the PNG: title, op edges, dashed edges to the output, op labels, nodes and the output box."""
    s, draw, font, scale = canvas.s, canvas.draw, canvas.font, canvas.scale
    draw.text(s((lay["x0"] + _PANEL_W / 2, 18)), lay["title"], fill="black", font=font(16), anchor="mm")
    for e in lay["edges"]:
        a, b = _trim(e["src"], e["dst"], _R + 2)
        canvas.arrow(a, b, _OP_COLOURS[e["op"]], 2.5)
    for n in (2, 3, 4):
        a, b = _trim(lay["pos"][n], lay["out"], _R + 2)
        canvas.arrow(a, b, "#999999", 1.5, dashed=True)
    for e in lay["edges"]:
        lx, ly = _point(e["src"], e["dst"], e["t"])
        w = 7.2 * len(e["op"]) + 8
        draw.rounded_rectangle([s((lx - w / 2, ly - 10)), s((lx + w / 2, ly + 8))], radius=4 * scale,
                               fill="white", outline=_OP_COLOURS[e["op"]], width=scale)
        draw.text(s((lx, ly - 1)), e["op"], fill=_OP_COLOURS[e["op"]], font=font(12), anchor="mm")
    for n, (x, y) in lay["pos"].items():
        fill = "#e8f0fe" if n < 2 else "#fff4d6"
        draw.ellipse([s((x - _R, y - _R)), s((x + _R, y + _R))], fill=fill, outline="#333333", width=scale)
        draw.text(s((x, y)), lay["labels"][n], fill="black", font=font(12 if n < 2 else 15), anchor="mm")
    ox, oy = lay["out"]
    draw.rounded_rectangle([s((ox - 34, oy - 20)), s((ox + 34, oy + 20))], radius=8 * scale, fill="#e6f4ea",
                           outline="#333333", width=scale)
    draw.text(s((ox, oy)), "c_{k}", fill="black", font=font(14), anchor="mm")
