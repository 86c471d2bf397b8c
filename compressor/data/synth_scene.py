"""Road geometry of a synthetic frame: a pinhole camera over a flat road bending towards a
vanishing point, lane lines, and the ground-truth masks that follow from them.

Rows map to a normalised inverse depth t in (0, 1] (t = 1 at the bottom row). A point at lateral
offset X metres and inverse depth t projects to x = vx + curve*(1-t)^2 + X*t*scale, so everything
placed through `Camera` (road, lanes, vehicles) is perspective-consistent.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

ROAD_T_MIN = 0.02  # farthest road row drawn
LANE_T_MIN = 0.05  # lane labels stop here: farther lines merge into a blob at the vanishing point
SHOULDER_M = 0.4  # paved strip outside the edge lines (drivable)


@dataclass(frozen=True)
class Camera:
    w: int
    h: int
    horizon: float
    vx: float
    cam_h: float
    focal: float
    curve: float

    @property
    def scale(self) -> float:
        """Pixels per metre at t = 1 (bottom row)."""
        return (self.h - self.horizon) / self.cam_h

    def y_of(self, t: np.ndarray | float) -> np.ndarray | float:
        return self.horizon + t * (self.h - self.horizon)

    def x_of(self, x_m: np.ndarray | float, t: np.ndarray | float) -> np.ndarray | float:
        return self.vx + self.curve * (1 - t) ** 2 + x_m * t * self.scale

    def depth(self, t: np.ndarray | float) -> np.ndarray | float:
        return self.focal * self.cam_h / (np.maximum(t, 1e-6) * (self.h - self.horizon))

    def rows_t(self, t_min: float) -> np.ndarray:
        """Inverse depths of rows every ~3 px from t_min to the bottom."""
        y0 = float(self.y_of(t_min))
        n = max(24, int((self.h - y0) / 3))
        ys = np.linspace(y0, self.h, n)
        return (ys - self.horizon) / (self.h - self.horizon)


@dataclass(frozen=True)
class LaneLine:
    x_m: float
    color: tuple[int, int, int]
    dashed: bool
    phase: float
    width_m: float = 0.15
    period_m: float = 12.0
    duty: float = 0.4

    @property
    def kind(self) -> str:
        return "single yellow" if self.color[2] < 100 else "single white"


@dataclass(frozen=True)
class Road:
    left_m: float
    lane_w: float
    n_lanes: int
    lines: tuple[LaneLine, ...]
    gray: int
    sidewalk_m: float  # 0 = none

    @property
    def right_m(self) -> float:
        return self.left_m + self.n_lanes * self.lane_w


def sample_camera(w: int, h: int, rng: np.random.Generator) -> Camera:
    horizon = h * rng.uniform(0.38, 0.5)
    return Camera(
        w=w,
        h=h,
        horizon=horizon,
        vx=w * rng.uniform(0.42, 0.58),
        cam_h=rng.uniform(1.3, 1.7),
        focal=0.8 * w,
        curve=w * rng.uniform(-0.25, 0.25) * (rng.random() < 0.6),
    )


def sample_road(rng: np.random.Generator, scene: str) -> Road:
    n_lanes = int(rng.choice([2, 3, 3]) if scene == "highway" else rng.choice([1, 2, 2, 3]))
    lane_w = rng.uniform(3.2, 3.8)
    ego = int(rng.integers(0, n_lanes))
    left = -(ego + rng.uniform(0.35, 0.65)) * lane_w
    white, yellow = (235, 235, 230), (240, 200, 40)
    lines = []
    for k in range(n_lanes + 1):
        edge = k in (0, n_lanes)
        color = yellow if (k == 0 and rng.random() < 0.4) else white
        dashed = (not edge) and rng.random() < 0.8
        lines.append(LaneLine(left + k * lane_w, color, dashed, float(rng.random())))
    sidewalk = 0.0 if scene == "highway" else rng.uniform(2.0, 3.5)
    return Road(left, lane_w, n_lanes, tuple(lines), int(rng.integers(85, 125)), sidewalk)


def strip_polygon(cam: Camera, x0_m: float, x1_m: float, t: np.ndarray) -> np.ndarray:
    """Closed polygon of the ground strip between two lateral offsets, over inverse depths t."""
    y = cam.y_of(t)
    left = np.stack([cam.x_of(x0_m, t), y], axis=1)
    right = np.stack([cam.x_of(x1_m, t), y], axis=1)[::-1]
    return np.round(np.concatenate([left, right])).astype(np.int32)


def draw_ground(img: np.ndarray, cam: Camera, road: Road, grass: tuple[int, int, int]) -> None:
    top = int(round(cam.horizon))
    cv2.rectangle(img, (0, top), (cam.w - 1, cam.h - 1), grass, -1)
    t = cam.rows_t(ROAD_T_MIN)
    if road.sidewalk_m:
        walk = (172, 170, 165)
        a, b = road.left_m - SHOULDER_M, road.right_m + SHOULDER_M
        cv2.fillPoly(img, [strip_polygon(cam, a - road.sidewalk_m, a, t)], walk)
        cv2.fillPoly(img, [strip_polygon(cam, b, b + road.sidewalk_m, t)], walk)


def draw_road(img: np.ndarray, drivable: np.ndarray, cam: Camera, road: Road) -> np.ndarray:
    """Paint the road surface and its drivable mask; returns the road polygon (image pixels)."""
    t = cam.rows_t(ROAD_T_MIN)
    poly = strip_polygon(cam, road.left_m - SHOULDER_M, road.right_m + SHOULDER_M, t)
    g = road.gray
    cv2.fillPoly(img, [poly], (g, g, g + 4))
    cv2.fillPoly(drivable, [poly], 255)
    return poly


def lane_centreline(cam: Camera, line: LaneLine) -> np.ndarray:
    t = cam.rows_t(LANE_T_MIN)
    return np.round(np.stack([cam.x_of(line.x_m, t), cam.y_of(t)], axis=1)).astype(np.int32)


def paint_lane(img: np.ndarray, cam: Camera, line: LaneLine) -> None:
    """Painted marking: perspective width, dashes spaced in metres (so they shrink with depth)."""
    t = cam.rows_t(LANE_T_MIN)
    t0, t1 = t[:-1], t[1:]
    on = np.ones(len(t0), bool)
    if line.dashed:
        z = cam.depth((t0 + t1) / 2)
        on = ((z / line.period_m + line.phase) % 1.0) <= line.duty
    half = line.width_m / 2
    corners = [(-half, t0), (half, t0), (half, t1), (-half, t1)]
    quads = np.stack(
        [np.stack([cam.x_of(line.x_m + dx, tt), cam.y_of(tt)], axis=1) for dx, tt in corners],
        axis=1,
    )  # (N, 4, 2)
    quads = np.round(quads[on]).astype(np.int32)
    if len(quads):
        cv2.fillPoly(img, list(quads), line.color)
    # Far away the marking is thinner than a pixel: keep a faint 1 px trace so it stays visible.
    far = lane_centreline(cam, line)
    cv2.polylines(img, [far[: max(2, len(far) // 4)]], False, line.color, 1, cv2.LINE_AA)


def draw_lane_masks(
    wide: np.ndarray, thin: np.ndarray, cam: Camera, road: Road, w_wide: int, w_thin: int
) -> None:
    """Lane labels are the whole line (dashes joined, hidden parts kept), as in BDD100K."""
    for line in road.lines:
        pts = lane_centreline(cam, line)
        cv2.polylines(wide, [pts], False, 255, w_wide)
        cv2.polylines(thin, [pts], False, 255, w_thin)


def lane_poly2d(cam: Camera, line: LaneLine, n: int = 6) -> list[dict]:
    """BDD-style poly2d record of a lane line (kept in the JSON like the real label files)."""
    pts = lane_centreline(cam, line)
    idx = np.linspace(0, len(pts) - 1, n).round().astype(int)
    verts = [[float(pts[i, 0]), float(pts[i, 1])] for i in idx]
    return [{"vertices": verts, "types": "L" * n, "closed": False}]
