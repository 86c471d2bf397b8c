"""How each kind of standing object looks. A draw function gets the object's box (integer xyxy,
pixel-edge convention) and its pre-sampled style, paints into an RGB image, and returns the light
sources it carries (x, y, radius, colour) so night frames can make them glow.

Styles are sampled up front, so drawing itself is deterministic and needs no random generator.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

Box = tuple[int, int, int, int]
Light = tuple[int, int, int, tuple[int, int, int]]
DrawFn = Callable[["Canvas", Box, dict], list[Light]]

TYRE = (22, 22, 24)
GLASS = (48, 58, 72)
TAIL = (215, 25, 25)


class Canvas:
    """Paints into the RGB image and, with the id of the object being drawn, into an owner map:
    the owner map is what makes the drivable mask and the occlusion flags exact."""

    def __init__(self, img: np.ndarray) -> None:
        self.img = img
        self.owner = np.full(img.shape[:2], -1, dtype=np.int16)
        self.current = -1

    def rect(self, x0: float, y0: float, x1: float, y1: float, color) -> None:
        """Filled rectangle over pixels [x0, x1) x [y0, y1) (edge convention, rounded)."""
        a, b = int(round(x0)), int(round(y0))
        c, d = int(round(x1)) - 1, int(round(y1)) - 1
        if c >= a and d >= b:
            cv2.rectangle(self.img, (a, b), (c, d), color, -1)
            cv2.rectangle(self.owner, (a, b), (c, d), self.current, -1)

    def poly(self, pts: np.ndarray, color) -> None:
        p = [np.round(pts).astype(np.int32)]
        cv2.fillPoly(self.img, p, color)
        cv2.fillPoly(self.owner, p, self.current)

    def circle(self, centre: tuple[float, float], r: int, color) -> None:
        c = (int(centre[0]), int(centre[1]))
        cv2.circle(self.img, c, r, color, -1)
        cv2.circle(self.owner, c, r, self.current, -1)


def _shade(color, k: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, v * k))) for v in color)  # type: ignore[return-value]


def _wheels(cv: Canvas, box: Box, frac_w: float, frac_h: float) -> None:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    cv.rect(x1, y2 - frac_h * h, x1 + frac_w * w, y2, TYRE)
    cv.rect(x2 - frac_w * w, y2 - frac_h * h, x2, y2, TYRE)


def _tail_lights(cv: Canvas, box: Box, y0: float, y1: float) -> list[Light]:
    x1, _, x2, _ = box
    w = x2 - x1
    cv.rect(x1 + 0.03 * w, y0, x1 + 0.18 * w, y1, TAIL)
    cv.rect(x2 - 0.18 * w, y0, x2 - 0.03 * w, y1, TAIL)
    r = max(1, int(0.08 * w))
    yc = int((y0 + y1) / 2)
    return [(int(x1 + 0.1 * w), yc, r, TAIL), (int(x2 - 0.1 * w), yc, r, TAIL)]


def draw_car(cv: Canvas, box: Box, style: dict) -> list[Light]:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    c = style["color"]
    _wheels(cv, box, 0.2, 0.2)
    cv.rect(x1, y1 + 0.4 * h, x2, y2 - 0.1 * h, c)
    cabin = np.array(
        [
            [x1 + 0.06 * w, y1 + 0.42 * h],
            [x1 + 0.18 * w, y1],
            [x2 - 0.18 * w, y1],
            [x2 - 0.06 * w, y1 + 0.42 * h],
        ]
    )
    cv.poly(cabin, _shade(c, 0.8))
    glass = np.array(
        [
            [x1 + 0.14 * w, y1 + 0.36 * h],
            [x1 + 0.22 * w, y1 + 0.07 * h],
            [x2 - 0.22 * w, y1 + 0.07 * h],
            [x2 - 0.14 * w, y1 + 0.36 * h],
        ]
    )
    cv.poly(glass, GLASS)
    cv.rect(x1, y2 - 0.24 * h, x2, y2 - 0.1 * h, _shade(c, 0.55))
    cv.rect(x1 + 0.38 * w, y1 + 0.6 * h, x2 - 0.38 * w, y1 + 0.72 * h, (228, 228, 215))
    return _tail_lights(cv, box, y1 + 0.46 * h, y1 + 0.58 * h)


def draw_bus(cv: Canvas, box: Box, style: dict) -> list[Light]:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    c = style["color"]
    _wheels(cv, box, 0.16, 0.12)
    cv.rect(x1, y1, x2, y2 - 0.06 * h, c)
    cv.rect(x1 + 0.08 * w, y1 + 0.1 * h, x2 - 0.08 * w, y1 + 0.42 * h, GLASS)
    cv.rect(x1 + 0.25 * w, y1 + 0.02 * h, x2 - 0.25 * w, y1 + 0.08 * h, (250, 150, 20))
    cv.rect(x1, y2 - 0.16 * h, x2, y2 - 0.06 * h, _shade(c, 0.5))
    return _tail_lights(cv, box, y1 + 0.62 * h, y1 + 0.72 * h)


def draw_truck(cv: Canvas, box: Box, style: dict) -> list[Light]:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    c = style["color"]
    _wheels(cv, box, 0.22, 0.16)
    cv.rect(x1, y1, x2, y2 - 0.2 * h, c)
    for k in (0.25, 0.5, 0.75):
        cv.rect(x1, y1 + k * 0.8 * h, x2, y1 + k * 0.8 * h + max(1, 0.01 * h), _shade(c, 0.7))
    cv.rect(
        (x1 + x2) / 2 - max(1, 0.01 * w),
        y1,
        (x1 + x2) / 2 + max(1, 0.01 * w),
        y2 - 0.2 * h,
        _shade(c, 0.45),
    )
    cv.rect(x1 + 0.05 * w, y2 - 0.2 * h, x2 - 0.05 * w, y2 - 0.13 * h, (40, 40, 40))
    return _tail_lights(cv, box, y2 - 0.3 * h, y2 - 0.22 * h)


def draw_train(cv: Canvas, box: Box, style: dict) -> list[Light]:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    c = style["color"]
    cv.rect(x1, y1, x2, y2 - 0.12 * h, c)
    cv.rect(x1, y2 - 0.12 * h, x2, y2, (35, 35, 38))
    cv.rect(x1, y1 + 0.62 * h, x2, y1 + 0.7 * h, style["stripe"])
    n = max(2, int(w / max(4.0, 1.4 * h)))
    step = w / n
    for k in range(n):
        cv.rect(
            x1 + k * step + 0.2 * step,
            y1 + 0.18 * h,
            x1 + (k + 1) * step - 0.2 * step,
            y1 + 0.48 * h,
            GLASS,
        )
    return []


def draw_person(cv: Canvas, box: Box, style: dict) -> list[Light]:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    cv.rect(x1 + 0.15 * w, y1 + 0.55 * h, x1 + 0.45 * w, y2, style["legs"])
    cv.rect(x1 + 0.55 * w, y1 + 0.55 * h, x1 + 0.85 * w, y2, style["legs"])
    cv.rect(x1, y1 + 0.17 * h, x2, y1 + 0.58 * h, style["shirt"])
    r = max(1, int(round(min(0.45 * w, 0.09 * h))))
    cv.circle((int((x1 + x2) / 2), int(y1 + r)), r, style["skin"])
    return []


def draw_two_wheeler(cv: Canvas, box: Box, style: dict) -> list[Light]:
    """Bike or motorcycle seen from behind: a thin tyre, a body, a handlebar."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    cx = (x1 + x2) / 2
    cv.rect(cx - 0.12 * w, y1 + 0.45 * h, cx + 0.12 * w, y2, TYRE)
    cv.rect(x1, y1, x2, y1 + max(1, 0.08 * h), (60, 60, 60))
    cv.rect(cx - 0.3 * w, y1 + 0.15 * h, cx + 0.3 * w, y1 + 0.5 * h, style["color"])
    return [(int(cx), int(y1 + 0.5 * h), max(1, int(0.1 * w)), TAIL)]


def _pole(cv: Canvas, box: Box, style: dict) -> None:
    x1, _, x2, y2 = box
    pw = max(1, int(round(style["pole_w"])))
    cx = (x1 + x2) // 2
    cv.rect(cx - pw / 2, y2, cx + pw / 2 + 1, style["ground_y"], (120, 120, 125))


def draw_sign(cv: Canvas, box: Box, style: dict) -> list[Light]:
    _pole(cv, box, style)
    x1, y1, x2, y2 = box
    c, rim = style["color"], style["rim"]
    if style["shape"] == "circle":
        r = max(1, (x2 - x1) // 2)
        centre = ((x1 + x2) // 2, (y1 + y2) // 2)
        cv.circle(centre, r, rim)
        cv.circle(centre, max(1, int(r * 0.75)), c)
    elif style["shape"] == "triangle":
        tri = np.array([[x1, y2 - 1], [(x1 + x2) // 2, y1], [x2 - 1, y2 - 1]], np.int32)
        cv.poly(tri, rim)
        inner = ((tri - tri.mean(0)) * 0.6 + tri.mean(0)).round().astype(np.int32)
        cv.poly(inner, c)
    else:
        cv.rect(x1, y1, x2, y2, rim)
        bw = max(1, 0.1 * (x2 - x1))
        cv.rect(x1 + bw, y1 + bw, x2 - bw, y2 - bw, c)
    return []


def draw_traffic_light(cv: Canvas, box: Box, style: dict) -> list[Light]:
    _pole(cv, box, style)
    x1, y1, x2, y2 = box
    cv.rect(x1, y1, x2, y2, (30, 32, 30))
    colors = {"red": (255, 40, 30), "yellow": (255, 200, 20), "green": (40, 255, 120)}
    lights: list[Light] = []
    r = max(1, int(0.32 * (x2 - x1)))
    for k, name in enumerate(("red", "yellow", "green")):
        cy = int(y1 + (k + 0.5) * (y2 - y1) / 3)
        lit = style["lit"] == name
        col = colors[name] if lit else _shade(colors[name], 0.25)
        cv.circle(((x1 + x2) // 2, cy), r, col)
        if lit:
            lights.append(((x1 + x2) // 2, cy, r, col))
    return lights


def draw_tree(cv: Canvas, box: Box, style: dict) -> list[Light]:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    cx = (x1 + x2) / 2
    cv.rect(cx - 0.06 * w, y1 + 0.5 * h, cx + 0.06 * w, y2, (90, 62, 40))
    g = style["green"]
    for dx, dy, rk in ((0.0, 0.3, 0.5), (-0.22, 0.42, 0.32), (0.22, 0.4, 0.34)):
        r = max(1, int(rk * w))
        cv.circle((int(cx + dx * w), int(y1 + dy * h)), r, g)
        g = _shade(g, 1.12)
    return []


def draw_lamp(cv: Canvas, box: Box, style: dict) -> list[Light]:
    """Street lamp: pole on the far side of the box, arm reaching over towards the road."""
    x1, y1, x2, y2 = box
    w = x2 - x1
    pw = max(1, 0.12 * w)
    pole_x = x2 - pw if style["pole_right"] else x1
    cv.rect(pole_x, y1, pole_x + pw, y2, (105, 105, 110))
    cv.rect(x1, y1, x2, y1 + max(1, 0.03 * (y2 - y1)), (105, 105, 110))
    r = max(1, int(0.15 * w))
    head = (int(x1 + r) if style["pole_right"] else int(x2 - r), int(y1 + 2 * r))
    cv.circle(head, r, (250, 240, 200))
    return [(head[0], head[1], 2 * r, (255, 230, 170))]


DRAWERS: dict[str, DrawFn] = {
    "car": draw_car,
    "bus": draw_bus,
    "truck": draw_truck,
    "train": draw_train,
    "person": draw_person,
    "rider": draw_person,
    "bike": draw_two_wheeler,
    "motor": draw_two_wheeler,
    "traffic sign": draw_sign,
    "traffic light": draw_traffic_light,
    "tree": draw_tree,
    "lamp": draw_lamp,
}
