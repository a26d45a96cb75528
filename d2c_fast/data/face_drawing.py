"""How a built-in face is drawn (:mod:`d2c_fast.data.faces` assembles it in
:func:`~d2c_fast.data.faces.render_face`).

:class:`Identity` draws every non-attribute parameter of one face from a fixed number of
uniforms, so switching an attribute never shifts the stream; :data:`STYLE_FIELDS` names the
ones that draw each attribute. :class:`Canvas` is the supersampled picture in face units, and
the ``draw_*`` functions paint the parts on it, back to front. Nothing here knows about
seeds, splits or labels.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["STYLE_FIELDS", "Identity", "Canvas", "hair_color", "draw_body", "draw_hair_back",
           "draw_face", "draw_beard", "draw_nose", "draw_mouth", "draw_eyes", "draw_hair_front",
           "draw_glasses", "finish"]

# Number of uniforms drawn for the scalar identity parameters. Fixed, so forcing an attribute
# never shifts the identity stream. (Must be >= what Identity consumes; checked.)
_N_SCALARS = 192
_N_BEARD_STROKES = 90
_N_HAIR_STRANDS = 14

# --------------------------------------------------------------------------------------------
# palettes
# --------------------------------------------------------------------------------------------

# Skin tones from very light to very dark (RGB in [0, 1]); a draw interpolates between stops.
_SKIN = np.array(
    [
        [0.99, 0.87, 0.78],
        [0.95, 0.78, 0.66],
        [0.87, 0.67, 0.52],
        [0.76, 0.55, 0.40],
        [0.62, 0.43, 0.30],
        [0.47, 0.31, 0.21],
        [0.34, 0.22, 0.15],
    ]
)
# Non-blond hair: black, dark brown, brown, auburn/red, dark grey-brown.
_HAIR_DARK = np.array(
    [
        [0.07, 0.06, 0.06],
        [0.20, 0.12, 0.08],
        [0.34, 0.21, 0.12],
        [0.52, 0.20, 0.09],
        [0.26, 0.22, 0.20],
    ]
)
_HAIR_DARK_P = np.array([0.32, 0.30, 0.18, 0.12, 0.08])
# Blond: platinum to golden.
_HAIR_BLOND = np.array([[0.99, 0.95, 0.72], [0.98, 0.88, 0.55], [0.96, 0.80, 0.44]])
# Iris colours: dark brown, brown, hazel, green, blue, grey.
_IRIS = np.array(
    [
        [0.18, 0.10, 0.05],
        [0.35, 0.20, 0.08],
        [0.45, 0.38, 0.15],
        [0.25, 0.45, 0.25],
        [0.25, 0.45, 0.75],
        [0.45, 0.50, 0.55],
    ]
)
_GLASS_FRAMES = np.array(
    [[0.03, 0.03, 0.03], [0.12, 0.06, 0.03], [0.05, 0.06, 0.16], [0.16, 0.04, 0.04]]
)


def _q(v: float) -> int:
    v = float(v)
    return 0 if v <= 0.0 else (255 if v >= 1.0 else int(v * 255.0 + 0.5))


def _rgb(c, alpha: Optional[float] = None) -> Tuple[int, ...]:
    """RGB in [0, 1] (clamped) -> 8-bit tuple, with an optional alpha."""
    if alpha is None:
        return (_q(c[0]), _q(c[1]), _q(c[2]))
    return (_q(c[0]), _q(c[1]), _q(c[2]), _q(alpha))


class _Draws:
    """Sequential access to a block of pre-drawn uniforms."""

    __slots__ = ("u", "i")

    def __init__(self, u: np.ndarray):
        self.u = u
        self.i = 0

    def __call__(self, lo: float = 0.0, hi: float = 1.0) -> float:
        v = self.u[self.i]
        self.i += 1
        return lo + (hi - lo) * float(v)

    def choice(self, p: Sequence[float]) -> int:
        v = self()
        c = np.cumsum(p)
        return int(min(np.searchsorted(c / c[-1], v, side="right"), len(p) - 1))

    def normal(self, sigma: float = 1.0) -> float:
        # Box-Muller from two uniforms (keeps the number of draws fixed).
        u1 = max(self(), 1e-12)
        u2 = self()
        return sigma * math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


#: Per attribute, the identity parameters that draw it and that do not show in the face while
#: it is in the other state (the shade of blond hair on a dark-haired face, the dark shade on
#: a blond one; the lipstick's red; the beard's style, length, darkness and strokes; the
#: glasses' size, frame, shape and tint; the teeth of a smile, the curve of a closed mouth).
#: ``render_face(..., force=..., style_from=j)`` takes them from face ``j``.
STYLE_FIELDS: Dict[str, Tuple[str, ...]] = {
    "blond_hair": ("hair_blond", "hair_dark"),
    "red_lipstick": ("lipstick",),
    "beard": ("beard_strokes", "beard_style", "beard_len", "beard_dark"),
    "eyeglasses": ("glass_rx", "glass_ry", "glass_thick", "glass_frame", "glass_round",
                   "glass_tint"),
    "smiling": ("teeth", "mouth_curve"),
}

_HAIR_STYLES = ("short", "side_part", "bangs", "long", "curly", "bald")
_HAIR_STYLE_P = (0.26, 0.18, 0.16, 0.26, 0.08, 0.06)


class Identity:
    """Every non-attribute parameter of one face, drawn from a fixed number of uniforms."""

    def __init__(self, rng: np.random.Generator):
        d = _Draws(rng.random(_N_SCALARS))
        self.beard_strokes = rng.random((_N_BEARD_STROKES, 4))
        self.hair_strands = rng.random((_N_HAIR_STRANDS, 4))

        # pose
        self.cx = d.normal(0.045)
        self.cy = 0.06 + d.normal(0.035)
        self.scale = d(1.2, 1.42)
        self.angle = d.normal(0.07)  # radians
        self.yaw = d(-0.05, 0.05)
        # face shape (face units: canvas spans [-1, 1])
        self.face_rx = d(0.40, 0.50)
        self.face_ry = self.face_rx * d(1.22, 1.42)
        self.jaw = d(0.15, 0.45)  # how much the jaw narrows
        self.chin = d(1.6, 3.0)  # exponent of the narrowing
        # skin
        t = d() ** 1.1 * (len(_SKIN) - 1)
        k = min(int(t), len(_SKIN) - 2)
        f = t - k
        skin = _SKIN[k] * (1 - f) + _SKIN[k + 1] * f
        skin = skin * np.array([1 + d.normal(0.025), 1 + d.normal(0.02), 1 + d.normal(0.03)])
        self.skin = np.clip(skin, 0, 1)
        self.blush = d(0.0, 0.22)
        # hair
        self.hair_dark = _HAIR_DARK[d.choice(_HAIR_DARK_P)] * d(0.85, 1.15)
        kb = d.choice((0.3, 0.4, 0.3))
        self.hair_blond = np.clip(_HAIR_BLOND[kb] * d(0.96, 1.04), 0, 1)
        self.hair_style = _HAIR_STYLES[d.choice(_HAIR_STYLE_P)]
        self.hairline = d(-0.66, -0.5)  # relative to face_ry
        self.hairline_p = d(1.8, 3.5)
        self.hair_volume = d(1.02, 1.12)
        self.hair_part = d(-0.5, 0.5)
        self.hair_length = d(0.25, 0.75)
        self.hair_tilt = d(-0.12, 0.12)
        self.bang_teeth = int(d(5, 10))
        self.curl_freq = int(d(9, 15))
        self.curl_amp = d(0.04, 0.08)
        self.hair_shine = d(0.05, 0.2)
        # eyes
        self.eye_y = d(-0.16, -0.06)
        self.eye_dx = d(0.16, 0.21)
        self.eye_rx = d(0.065, 0.085)
        self.eye_ry = self.eye_rx * d(0.45, 0.62)
        self.iris = _IRIS[d.choice((0.3, 0.2, 0.12, 0.1, 0.18, 0.1))] * d(0.85, 1.15)
        self.eye_tilt = d(-0.12, 0.12)
        # eyebrows
        self.brow_dy = d(0.07, 0.11)
        self.brow_thick = d(0.022, 0.04)
        self.brow_arch = d(0.01, 0.04)
        self.brow_len = d(0.08, 0.12)
        self.brow_tilt = d(-0.12, 0.15)
        # nose
        self.nose_y = d(0.10, 0.16)
        self.nose_w = d(0.045, 0.075)
        self.nose_len = d(0.12, 0.2)
        # mouth
        self.mouth_y = d(0.30, 0.36)
        self.mouth_w = d(0.14, 0.18)
        self.lip_u = d(0.036, 0.056)
        self.lip_l = d(0.046, 0.072)
        self.mouth_curve = d(-0.012, 0.008)
        self.lip_natural = np.clip(
            self.skin * np.array([0.88, 0.70, 0.68]) + np.array([0.04, 0.0, 0.0]), 0, 1
        )
        self.lipstick = np.clip(
            np.array([d(0.72, 0.90), d(0.02, 0.10), d(0.08, 0.18)]), 0, 1
        )
        self.teeth = d(0.86, 0.97)
        # beard
        self.beard_style = d.choice((0.6, 0.25, 0.15))  # full, chin + moustache, stubble
        self.beard_len = d(0.02, 0.08)
        self.beard_dark = d(0.35, 0.6)
        # glasses
        self.glass_rx = d(0.115, 0.14)
        self.glass_ry = d(0.075, 0.1)
        self.glass_thick = d(0.04, 0.055)
        self.glass_frame = _GLASS_FRAMES[d.choice((0.45, 0.25, 0.15, 0.15))]
        self.glass_round = d() < 0.5
        self.glass_tint = d(0.0, 0.2) if d() < 0.85 else d(0.6, 0.85)
        # ears, neck, clothes
        self.ear_ry = d(0.09, 0.12)
        self.neck_w = d(0.55, 0.7)
        self.clothes = np.array([d(0.1, 0.9), d(0.1, 0.9), d(0.1, 0.9)])
        self.clothes_neck = d.choice((0.5, 0.5))
        # background
        bg = np.array([d(0.1, 0.95), d(0.1, 0.95), d(0.1, 0.95)])
        grey = d(0.2, 0.85)
        mix = d(0.0, 0.7)
        self.bg0 = bg * (1 - mix) + grey * mix
        self.bg1 = np.clip(self.bg0 + np.array([d.normal(0.15), d.normal(0.15), d.normal(0.15)]), 0, 1)
        self.bg_angle = d(0, 2 * math.pi)
        # lighting
        self.light_angle = d(0, 2 * math.pi)
        self.light_strength = d(0.0, 0.3)
        self.brightness = d(0.85, 1.1)
        self.white = np.array([1 + d.normal(0.03), 1.0, 1 + d.normal(0.03)])
        self.shade_side = 1.0 if d() < 0.5 else -1.0
        self.shade_alpha = d(0.04, 0.14)
        if d.i > _N_SCALARS:  # pragma: no cover - developer guard
            raise AssertionError("_N_SCALARS too small")


# --------------------------------------------------------------------------------------------
# drawing
# --------------------------------------------------------------------------------------------


_TRIG: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}


def _unit_circle(n: int) -> Tuple[np.ndarray, np.ndarray]:
    tab = _TRIG.get(n)
    if tab is None:
        t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
        tab = _TRIG[n] = (np.cos(t), np.sin(t))
    return tab


def _ellipse_pts(cx, cy, rx, ry, rot=0.0, n=28) -> np.ndarray:
    ct, st = _unit_circle(n)
    x, y = rx * ct, ry * st
    if rot:
        c, s = math.cos(rot), math.sin(rot)
        x, y = c * x - s * y, s * x + c * y
    return np.stack([cx + x, cy + y], axis=1)


class Canvas:
    """A supersampled RGB canvas with a similarity transform from face units to pixels."""

    def __init__(self, size: int, ident: Identity):
        self.size = size
        self.im = Image.new("RGB", (size, size), _rgb(ident.bg0))
        self.draw = ImageDraw.Draw(self.im, "RGBA")
        half = size / 2.0
        s = ident.scale * half
        c, sn = math.cos(ident.angle), math.sin(ident.angle)
        self.m = np.array([[c * s, -sn * s], [sn * s, c * s]])
        self.o = np.array([half + ident.cx * half, half + ident.cy * half])
        self.px_per_unit = s

    def xy(self, pts: np.ndarray) -> list:
        return (pts @ self.m.T + self.o).ravel().tolist()

    def poly(self, pts: np.ndarray, color, alpha: Optional[float] = None) -> None:
        self.draw.polygon(self.xy(pts), fill=_rgb(color, alpha))

    def line(self, pts: np.ndarray, color, width_units: float, alpha=None) -> None:
        w = max(1, int(round(width_units * self.px_per_unit)))
        self.draw.line(self.xy(pts), fill=_rgb(color, alpha), width=w, joint="curve")

    def segments(self, segs: np.ndarray, colors: Sequence[Tuple[int, ...]], which: np.ndarray, width_units: float) -> None:
        """Many short lines: ``segs`` (k, 2, 2) in face units, colour ``colors[which[i]]``."""
        w = max(1, int(round(width_units * self.px_per_unit)))
        xy = (segs.reshape(-1, 2) @ self.m.T + self.o).reshape(-1, 4).tolist()
        line = self.draw.line
        for k, c in zip(xy, which.tolist()):
            line(k, fill=colors[c], width=w)

    def background(self, ident: Identity) -> None:
        # a linear gradient from bg0 to bg1 drawn as rotated bands (fine after the box filter)
        n = 14
        size = self.size
        d = np.array([math.cos(ident.bg_angle), math.sin(ident.bg_angle)])
        p = np.array([-d[1], d[0]])
        ctr = np.array([size / 2.0, size / 2.0])
        r = size * 0.75
        edges = np.linspace(-r, r, n + 1)
        f = (np.arange(n) + 0.5) / n
        cols = np.clip(ident.bg0[None] * (1 - f[:, None]) + ident.bg1[None] * f[:, None], 0, 1)
        cols = (cols * 255.0 + 0.5).astype(np.int64).tolist()
        a, b = edges[:-1, None], edges[1:, None] + 1.0
        quads = np.stack(
            [ctr + a * d - r * p, ctr + b * d - r * p, ctr + b * d + r * p, ctr + a * d + r * p], 1
        ).reshape(n, 8).tolist()
        for k in range(n):
            self.draw.polygon(quads[k], fill=tuple(cols[k]))


def _face_outline(ident: Identity, grow: float = 1.0, n: int = 40) -> np.ndarray:
    """Face outline around (0, 0): an ellipse whose lower half narrows towards the chin."""
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    st = np.sin(t)
    x = ident.face_rx * grow * np.cos(t)
    lower = np.clip(st, 0.0, 1.0)
    x = x * (1.0 - ident.jaw * lower ** ident.chin)
    y = ident.face_ry * grow * st
    return np.stack([x, y], axis=1)


def hair_color(ident: Identity, blond: bool) -> np.ndarray:
    return ident.hair_blond if blond else np.clip(ident.hair_dark, 0, 1)


def draw_hair_back(cv: Canvas, ident: Identity, hair: np.ndarray) -> None:
    rx, ry = ident.face_rx, ident.face_ry
    style = ident.hair_style
    if style == "long":
        bottom = ry * (0.55 + ident.hair_length)
        w = rx * (1.18 + 0.1 * ident.hair_volume)
        top = _ellipse_pts(0.0, -0.1 * ry, rx * ident.hair_volume * 1.04, ry * 1.0, n=32)
        top = top[top[:, 1] < -0.1 * ry + 1e-9]
        pts = np.concatenate(
            [
                top[np.argsort(np.arctan2(top[:, 1] + 0.1 * ry, top[:, 0]))],
                np.array([[w, 0.2 * ry], [w * 1.02, bottom], [-w * 1.02, bottom], [-w, 0.2 * ry]]),
            ]
        )
        cv.poly(pts, hair * 0.8)
    elif style == "curly":
        t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
        r = 1.0 + ident.curl_amp * np.sin(ident.curl_freq * t) ** 2
        x = rx * 1.32 * r * np.cos(t)
        y = -0.22 * ry + ry * 0.95 * r * np.sin(t)
        cv.poly(np.stack([x, y], 1), hair * 0.85)


def draw_body(cv: Canvas, ident: Identity) -> None:
    rx, ry = ident.face_rx, ident.face_ry
    # clothes / shoulders
    cv.poly(_ellipse_pts(0.0, ry * 1.05 + 0.55, 1.05, 0.45, n=32), ident.clothes)
    # neck
    nw = rx * ident.neck_w
    neck = np.array([[-nw, 0.2 * ry], [nw, 0.2 * ry], [nw * 1.08, ry + 0.32], [-nw * 1.08, ry + 0.32]])
    cv.poly(neck, ident.skin * 0.8)
    if ident.clothes_neck == 0:  # V neckline
        v = np.array([[-nw * 1.3, ry + 0.2], [nw * 1.3, ry + 0.2], [0.0, ry + 0.45]])
        cv.poly(v, ident.skin * 0.8)
    else:  # round neckline
        cv.poly(_ellipse_pts(0.0, ry + 0.22, nw * 1.15, 0.12, n=20), ident.skin * 0.8)
    # shadow under the chin
    cv.poly(_ellipse_pts(0.0, ry * 0.92, rx * 0.55, 0.1, n=20), ident.skin * 0.55, alpha=0.35)


def draw_face(cv: Canvas, ident: Identity, yaw: float) -> None:
    rx, ry = ident.face_rx, ident.face_ry
    skin = ident.skin
    # ears
    for sgn in (-1.0, 1.0):
        cv.poly(
            _ellipse_pts(sgn * rx * 0.97 + yaw * 0.2, ident.eye_y * ry + 0.07, 0.065, ident.ear_ry, n=18),
            skin * 0.9,
        )
    cv.poly(_face_outline(ident), skin)
    # side shading and highlight (cheap 3D cue)
    sh = ident.shade_side
    cv.poly(
        _ellipse_pts(sh * rx * 0.55, 0.05 * ry, rx * 0.55, ry * 0.9, n=24), skin * 0.7, alpha=ident.shade_alpha
    )
    cv.poly(_ellipse_pts(-sh * rx * 0.2 + yaw, -0.35 * ry, rx * 0.45, ry * 0.35, n=20), (1, 1, 1), alpha=0.06)
    # cheeks
    if ident.blush > 0.04:
        for sgn in (-1.0, 1.0):
            cv.poly(
                _ellipse_pts(sgn * rx * 0.55 + yaw, 0.2 * ry, 0.09, 0.06, n=16),
                (0.9, 0.35, 0.35),
                alpha=ident.blush * 0.5,
            )


def draw_beard(cv: Canvas, ident: Identity, hair: np.ndarray, yaw: float, blond: bool) -> None:
    rx, ry = ident.face_rx, ident.face_ry
    base = hair * ident.beard_dark
    if blond:
        base = np.array([0.42, 0.3, 0.14]) * (ident.beard_dark + 0.4)
    base = np.minimum(base, ident.skin * 0.45)
    style = ident.beard_style  # 0 full, 1 chin beard + moustache, 2 heavy stubble
    my, ny = ident.mouth_y, ident.nose_y
    mw = ident.mouth_w
    grow = 1.0 + ident.beard_len * 0.4
    out = _face_outline(ident, grow=grow, n=48)
    out[:, 1] += np.clip(out[:, 1] / ry, 0, 1) ** 4 * ident.beard_len * ry  # longer at the chin
    must_y = ny + 0.05  # top of the moustache, just under the nose
    if style == 1:
        keep = (out[:, 1] > my - 0.01) & (np.abs(out[:, 0]) < rx * 0.5)
        side = None
    else:
        y_top = ident.eye_y * ry + 0.12 if style == 0 else ny
        keep = out[:, 1] > y_top
        side = y_top
    arc = out[keep]
    arc = arc[np.argsort(np.arctan2(arc[:, 1], arc[:, 0]))]  # right -> chin -> left
    if side is None:  # chin beard: corners beside the mouth
        cx = max(mw * 1.25, float(np.abs(arc[:, 0]).max()) * 0.8)
        inner = np.array(
            [[-cx, my + 0.01], [-mw * 1.15, must_y + 0.01], [0.0, must_y], [mw * 1.15, must_y + 0.01], [cx, my + 0.01]]
        )
    else:  # sideburns, down the cheeks to the mouth corners, moustache
        xr = float(np.abs(arc[[0, -1], 0]).min())
        inner = np.array(
            [
                [-xr * 0.8, side],
                [-rx * 0.62, ny + 0.06],
                [-mw * 1.2, must_y + 0.015],
                [0.0, must_y],
                [mw * 1.2, must_y + 0.015],
                [rx * 0.62, ny + 0.06],
                [xr * 0.8, side],
            ]
        )
    inner[:, 0] += yaw * 1.2 * (1 - np.abs(inner[:, 0]) / rx)
    alpha = 0.94 if style != 2 else 0.72
    cv.poly(np.concatenate([arc, inner]), base, alpha=alpha)
    # texture: short strokes over the beard area
    a, b, c, e = ident.beard_strokes.T
    y0 = must_y + 0.02
    y1 = ry * (1.0 + ident.beard_len * 0.6)
    if style == 1:
        y0 = my + 0.03
    y = y0 + a * (y1 - y0)
    fy = np.clip(y / (ry * grow), -1.0, 1.0)
    half_w = rx * grow * np.sqrt(np.maximum(1 - fy * fy, 0.0)) * (1 - ident.jaw * np.maximum(fy, 0) ** ident.chin)
    if style == 1:
        half_w = np.minimum(half_w, rx * 0.45)
    x = (2 * b - 1) * half_w * 0.9
    ln = 0.02 + 0.025 * c
    ang = math.pi / 2 + (e - 0.5) * 0.9 + (x / rx) * 0.6
    segs = np.stack([np.stack([x, y], 1), np.stack([x + ln * np.cos(ang), y + ln * np.sin(ang)], 1)], 1)
    cols = [_rgb(base * 0.5, 0.75), _rgb(np.minimum(base * 1.6 + 0.04, 1), 0.6)]
    cv.segments(segs, cols, (e > 0.65).astype(np.int64), 0.012)


def draw_eyes(cv: Canvas, ident: Identity, yaw: float, smiling: bool, hair: np.ndarray, blond: bool) -> None:
    ry = ident.face_ry
    ey = ident.eye_y * ry
    erx = ident.eye_rx
    ery = ident.eye_ry * (0.62 if smiling else 1.0)
    brow_col = hair * 0.7 if not blond else np.array([0.55, 0.4, 0.22])
    for sgn in (-1.0, 1.0):
        ex = sgn * ident.eye_dx + yaw
        tilt = -sgn * ident.eye_tilt
        # socket shadow
        cv.poly(_ellipse_pts(ex, ey - 0.01, erx * 1.35, ery * 1.8, tilt, n=20), ident.skin * 0.6, alpha=0.25)
        cv.poly(_ellipse_pts(ex, ey, erx, ery, tilt, n=22), (0.96, 0.95, 0.93))
        ir = min(ery * 1.05, erx * 0.6)
        cv.poly(_ellipse_pts(ex + yaw * 0.3, ey, ir, min(ir, ery * 0.98), n=16), ident.iris)
        cv.poly(_ellipse_pts(ex + yaw * 0.3, ey, ir * 0.45, ir * 0.45, n=12), (0.02, 0.02, 0.02))
        # upper lid line
        t = np.linspace(math.pi, 2 * math.pi, 9)
        lid = np.stack([ex + erx * 1.05 * np.cos(t), ey + ery * 1.05 * np.sin(t)], 1)
        cv.line(lid, (0.08, 0.05, 0.04), 0.016)
        # eyebrow: a thick arc, tapering towards the temple
        by = ey - ident.brow_dy - ident.eye_ry * 0.5  # brows do not move with a smile
        xs = np.linspace(-1.0, 1.0, 9)
        bx = ex + sgn * xs * ident.brow_len + sgn * 0.01
        byy = by - ident.brow_arch * (1 - xs**2) + sgn * 0 + xs * ident.brow_tilt * ident.brow_len * 0.5
        thick = ident.brow_thick * (1.0 - 0.45 * (xs + 1) / 2)
        upper = np.stack([bx, byy - thick / 2], 1)
        lower = np.stack([bx, byy + thick / 2], 1)[::-1]
        cv.poly(np.concatenate([upper, lower]), brow_col)


def draw_nose(cv: Canvas, ident: Identity, yaw: float) -> None:
    ny = ident.nose_y
    nx = yaw * 1.6
    w = ident.nose_w
    skin = ident.skin
    side = ident.shade_side
    bridge = np.array([[nx + side * w * 0.3, ny - ident.nose_len], [nx + side * w * 0.75, ny - 0.02]])
    cv.line(bridge, skin * 0.7, 0.018, alpha=0.45)
    cv.poly(_ellipse_pts(nx + side * w * 0.2, ny + w * 0.15, w * 1.0, w * 0.55, n=16), skin * 0.75, alpha=0.45)
    cv.poly(_ellipse_pts(nx - 0.01 * side, ny - 0.012, w * 0.45, w * 0.3, n=12), (1, 1, 1), alpha=0.14)
    for sgn in (-1.0, 1.0):
        cv.poly(_ellipse_pts(nx + sgn * w * 0.45, ny + w * 0.3, w * 0.22, w * 0.12, n=10), skin * 0.4, alpha=0.5)


_T6 = np.linspace(0.0, 1.0, 6)


def draw_mouth(cv: Canvas, ident: Identity, yaw: float, lipstick: bool, smiling: bool) -> None:
    my = ident.mouth_y
    mx = yaw * 1.2
    lip = ident.lipstick if lipstick else ident.lip_natural
    lip_u, lip_l = ident.lip_u, ident.lip_l
    if lipstick:  # lipstick is drawn a little over the lip line
        lip_u, lip_l = lip_u * 1.15, lip_l * 1.15
    n = 15
    xs = np.linspace(-1.0, 1.0, n)
    if smiling:
        mw = ident.mouth_w * 1.3
        k = 0.1  # corners up (y grows downwards)
        center = my - k * xs**2 + k * 0.35
        gap = 0.075 * (1 - xs**2) ** 0.7  # a broad open smile (since render version 3)
        up_top = center - gap * 0.35 - lip_u * (1 - xs**2) ** 0.5 * 0.8
        up_bot = center - gap * 0.35
        lo_top = center + gap
        lo_bot = center + gap + lip_l * (1 - xs**2) ** 0.5 * 0.9
        X = mx + xs * mw
        # mouth opening (dark), teeth in its upper part
        opening = np.concatenate([np.stack([X, up_bot], 1), np.stack([X, lo_top], 1)[::-1]])
        cv.poly(opening, (0.25, 0.05, 0.06))
        teeth_bot = up_bot + (lo_top - up_bot) * 0.7
        teeth = np.concatenate([np.stack([X[2:-2], up_bot[2:-2]], 1), np.stack([X[2:-2], teeth_bot[2:-2]], 1)[::-1]])
        cv.poly(teeth, (ident.teeth, ident.teeth, ident.teeth * 0.95))
        cv.poly(np.concatenate([np.stack([X, up_top], 1), np.stack([X, up_bot], 1)[::-1]]), lip)
        cv.poly(np.concatenate([np.stack([X, lo_top], 1), np.stack([X, lo_bot], 1)[::-1]]), lip)
        # smile lines from the nose wings to beyond the mouth corners
        for sgn in (-1.0, 1.0):
            t = _T6
            x0 = ident.nose_w * 1.5
            sx = mx + sgn * (x0 + t * (mw * 1.12 - x0) + 0.035 * np.sin(t * math.pi))
            sy = ident.nose_y + 0.05 + t * (my - 0.02 - ident.nose_y)
            cv.line(np.stack([sx, sy], 1), ident.skin * 0.55, 0.016, alpha=0.45)
    else:
        mw = ident.mouth_w
        k = ident.mouth_curve
        center = my - k * xs**2
        cupid = 0.012 * np.exp(-((np.abs(xs) - 0.25) ** 2) / 0.03)
        up_top = center - lip_u * (1 - xs**2) ** 0.6 - cupid
        lo_bot = center + lip_l * (1 - xs**2) ** 0.6
        X = mx + xs * mw
        cv.poly(np.concatenate([np.stack([X, up_top], 1), np.stack([X, center], 1)[::-1]]), lip * 0.92)
        cv.poly(np.concatenate([np.stack([X, center], 1), np.stack([X, lo_bot], 1)[::-1]]), lip)
        cv.line(np.stack([X, center], 1), lip * 0.45, 0.012)
    # lower-lip highlight
    cv.poly(_ellipse_pts(mx, my + (0.05 if smiling else 0.02) + lip_l * 0.3, mw * 0.35, 0.012, n=10), (1, 1, 1), alpha=0.18)


_XS21 = np.linspace(1.0, -1.0, 21)
_T_TOP = np.linspace(math.pi, 2 * math.pi, 25)


def draw_hair_front(cv: Canvas, ident: Identity, hair: np.ndarray) -> None:
    rx, ry = ident.face_rx, ident.face_ry
    style = ident.hair_style
    vol = ident.hair_volume
    hl = ident.hairline * ry  # hairline height at the centre
    if style == "bald":
        # a receding, close-cropped cap (the skin shows through) and a tuft over each ear
        t = _T_TOP
        crown = np.stack([rx * 1.0 * np.cos(t), -0.1 * ry + ry * 0.97 * np.sin(t)], 1)
        crown = crown[crown[:, 1] < hl * 1.05]
        cv.poly(crown, hair, alpha=0.5)
        for sgn in (-1.0, 1.0):
            cv.poly(_ellipse_pts(sgn * rx * 0.98, -0.32 * ry, 0.065, 0.2 * ry, -sgn * 0.15, n=18), hair)
        return
    # the cap: upper half of an ellipse a little larger than the skull
    cap_cy = -0.1 * ry
    cap_rx = rx * vol * (1.04 if style != "curly" else 1.16)
    cap_ry = ry * (1.0 if style != "curly" else 1.04) * (0.96 + 0.04 * vol)
    t = _T_TOP
    if style == "curly":
        r = 1.0 + ident.curl_amp * np.sin(ident.curl_freq * t) ** 2
    else:
        r = 1.0
    cap = np.stack([cap_rx * r * np.cos(t), cap_cy + cap_ry * r * np.sin(t)], 1)
    # hairline from the right temple back to the left temple
    xs = _XS21
    side_y = cap_cy + 0.05 * ry  # where the hairline meets the sides of the head
    ax = np.abs(xs)
    if style == "bangs":
        base = hl * 0.5 + 0.1 * ry * ax**2
        y = base + 0.035 * np.abs(np.sin(xs * ident.bang_teeth * math.pi / 2))
    elif style == "side_part":
        u = np.clip(np.abs(xs - ident.hair_part * 0.6) / (1 + abs(ident.hair_part) * 0.6), 0, 1)
        y = hl + (side_y - hl) * u**ident.hairline_p + ident.hair_tilt * ry * xs * 0.5
    else:
        y = hl + (side_y - hl) * ax**ident.hairline_p
    line = np.stack([xs * rx * 0.99, np.minimum(y, side_y + 0.1 * ry)], 1)
    ends = np.array([[cap[-1, 0], side_y + 0.02], [-cap[-1, 0], side_y + 0.02]])
    cv.poly(np.concatenate([cap, ends[:1], line, ends[1:]]), hair)
    if style == "long":
        # side curtains framing the face
        bottom = ry * (0.35 + ident.hair_length)
        for sgn in (-1.0, 1.0):
            curtain = np.array(
                [
                    [sgn * rx * 1.06, side_y - 0.1],
                    [sgn * rx * 0.88, side_y + 0.02],
                    [sgn * rx * 0.9, 0.3 * ry],
                    [sgn * rx * 1.0, bottom],
                    [sgn * rx * 1.2, bottom + 0.03],
                    [sgn * rx * 1.2, 0.1 * ry],
                ]
            )
            cv.poly(curtain, hair * 0.93)
    # strands and a sheen
    a, b, c, e = ident.hair_strands.T
    x0 = (2 * a - 1) * rx * 0.75
    ytop = cap_cy - cap_ry * np.sqrt(np.maximum(1 - (x0 / cap_rx) ** 2, 0.0)) + 0.03
    ybot = min(hl, float(line[:, 1].min())) - 0.03
    y0 = ybot - b * 0.4 * np.maximum(ybot - ytop, 0.0)
    y1 = np.maximum(y0 - (0.08 + 0.12 * c), ytop)
    x1 = x0 * (1.0 - 0.25 * c) + (e - 0.5) * 0.05
    segs = np.stack([np.stack([x0, y0], 1), np.stack([x1, y1], 1)], 1)
    cols = [_rgb(hair * 0.7, 0.55), _rgb(np.minimum(hair * 1.25 + 0.03, 1), 0.55)]
    cv.segments(segs, cols, (e > 0.5).astype(np.int64), 0.013)
    cv.poly(
        _ellipse_pts(-ident.shade_side * rx * 0.3, cap_cy - cap_ry * 0.7, rx * 0.35, ry * 0.1, -0.3 * ident.shade_side, n=16),
        (1, 1, 0.95),
        alpha=ident.hair_shine,
    )


def draw_glasses(cv: Canvas, ident: Identity, yaw: float) -> None:
    ry = ident.face_ry
    ey = ident.eye_y * ry
    col = ident.glass_frame
    th = ident.glass_thick
    grx, gry = ident.glass_rx, ident.glass_ry
    for sgn in (-1.0, 1.0):
        ex = sgn * ident.eye_dx + yaw
        if ident.glass_round:
            ring = _ellipse_pts(ex, ey, grx, gry, n=24)
        else:  # rounded rectangle via a superellipse
            t = np.linspace(0, 2 * math.pi, 28, endpoint=False)
            c, s = np.cos(t), np.sin(t)
            ring = np.stack(
                [ex + grx * np.sign(c) * np.abs(c) ** 0.5, ey + gry * np.sign(s) * np.abs(s) ** 0.5], 1
            )
        if ident.glass_tint > 0.01:
            cv.poly(ring, (0.1, 0.12, 0.15), alpha=ident.glass_tint)
        cv.line(np.concatenate([ring, ring[:2]]), col, th)
        # temple arm to the ear
        arm = np.array([[ex + sgn * grx, ey - gry * 0.4], [sgn * ident.face_rx * 1.0, ey - gry * 0.1 + 0.02]])
        cv.line(arm, col, th * 0.9)
    bridge = np.array(
        [[yaw - ident.eye_dx + grx, ey - gry * 0.2], [yaw, ey - gry * 0.45], [yaw + ident.eye_dx - grx, ey - gry * 0.2]]
    )
    cv.line(bridge, col, th * 0.9)


def finish(arr: np.ndarray, ident: Identity) -> np.ndarray:
    """Lighting on the final-resolution float image (H, W, 3)."""
    r = arr.shape[0]
    g = (np.arange(r, dtype=np.float32) + 0.5) / r * 2.0 - 1.0
    lx, ly = math.cos(ident.light_angle), math.sin(ident.light_angle)
    shade = 1.0 + ident.light_strength * 0.5 * (lx * g[None, :] + ly * g[:, None])
    gain = (ident.brightness * ident.white).astype(np.float32)
    out = arr * shade[:, :, None].astype(np.float32) * gain[None, None, :]
    np.clip(out, 0.0, 1.0, out=out)
    return out
