"""Where standing objects go: vehicles in lanes, a train beside the road, people and two-wheelers
near the kerb, signs, traffic lights, trees and lamps at the roadside. Every size is in metres and
projected through the camera, so nearer objects are bigger and lower in the frame."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from compressor.data.synth_draw import Box
from compressor.data.synth_scene import SHOULDER_M, Camera, Road
from runtime.boxes import box_iou

VEHICLE_COLORS: tuple[tuple[int, int, int], ...] = (
    (200, 30, 30),
    (30, 60, 190),
    (238, 238, 232),
    (22, 22, 26),
    (230, 190, 20),
    (30, 140, 60),
    (240, 120, 20),
    (120, 20, 30),
    (20, 110, 140),
    (150, 40, 160),
)
# (width range, height range) in metres, rear view.
VEHICLE_SIZES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "car": ((1.7, 1.95), (1.4, 1.9)),
    "truck": ((2.4, 2.6), (2.8, 3.8)),
    "bus": ((2.5, 2.6), (3.0, 3.4)),
}
VEHICLE_MIX: tuple[tuple[str, ...], tuple[float, ...]] = (
    ("car", "truck", "bus"),
    (0.72, 0.16, 0.12),
)
SHIRTS = (
    (200, 40, 40),
    (40, 80, 200),
    (230, 230, 230),
    (40, 160, 80),
    (240, 180, 30),
    (90, 50, 130),
)
SKINS = ((235, 195, 160), (190, 140, 100), (120, 80, 55))


@dataclass
class Thing:
    kind: str
    t: float  # inverse depth: larger is nearer, drawn later
    box: Box  # full extent, may reach outside the frame
    style: dict = field(default_factory=dict)
    labeled: bool = True


def t_at_depth(cam: Camera, z_m: float) -> float:
    return cam.focal * cam.cam_h / (z_m * (cam.h - cam.horizon))


def log_depth(rng: np.random.Generator, z0: float, z1: float) -> float:
    return float(math.exp(rng.uniform(math.log(z0), math.log(z1))))


def box_at(cam: Camera, x_m: float, t: float, w_m: float, h_m: float, lift_m: float = 0.0) -> Box:
    """Integer box of an upright w x h (metres) object centred at lateral x, `lift` above ground."""
    s = t * cam.scale
    xc, yb = float(cam.x_of(x_m, t)), float(cam.y_of(t)) - lift_m * s
    return (round(xc - w_m * s / 2), round(yb - h_m * s), round(xc + w_m * s / 2), round(yb))


def inside_fraction(box: Box, w: int, h: int) -> float:
    x1, y1, x2, y2 = box
    area = max(1, (x2 - x1) * (y2 - y1))
    iw = max(0, min(x2, w) - max(x1, 0))
    ih = max(0, min(y2, h) - max(y1, 0))
    return iw * ih / area


def _color(rng: np.random.Generator, palette) -> tuple[int, int, int]:
    return tuple(int(v) for v in palette[int(rng.integers(len(palette)))])  # type: ignore[return-value]


def place_vehicles(cam: Camera, road: Road, rng: np.random.Generator, n: int) -> list[Thing]:
    """Vehicles in lanes; candidates overlapping a placed one too much are redrawn."""
    things: list[Thing] = []
    for _ in range(4 * n):
        if len(things) >= n:
            break
        kind = str(rng.choice(VEHICLE_MIX[0], p=VEHICLE_MIX[1]))
        (w0, w1), (h0, h1) = VEHICLE_SIZES[kind]
        lane = int(rng.integers(road.n_lanes))
        x = road.left_m + (lane + 0.5) * road.lane_w + rng.uniform(-0.35, 0.35)
        t = t_at_depth(cam, log_depth(rng, 7.0, 90.0))
        box = box_at(cam, x, t, rng.uniform(w0, w1), rng.uniform(h0, h1))
        if inside_fraction(box, cam.w, cam.h) < 0.5 or min(box[2] - box[0], box[3] - box[1]) < 4:
            continue
        if things and box_iou(np.array([box]), np.array([o.box for o in things])).max() > 0.4:
            continue
        things.append(Thing(kind, t, box, {"color": _color(rng, VEHICLE_COLORS)}))
    return things


def place_train(cam: Camera, road: Road, rng: np.random.Generator) -> list[Thing]:
    side = 1 if rng.random() < 0.5 else -1
    edge = road.right_m if side > 0 else road.left_m
    near_side = edge + side * (road.sidewalk_m + rng.uniform(8, 16))
    length = rng.uniform(25, 60)
    t = t_at_depth(cam, log_depth(rng, 30.0, 80.0))
    # Seen side-on, it extends away from the road (not across it).
    box = box_at(cam, near_side + side * length / 2, t, length, rng.uniform(3.6, 4.2))
    if inside_fraction(box, cam.w, cam.h) < 0.4:
        return []
    style = {"color": _color(rng, VEHICLE_COLORS), "stripe": _color(rng, VEHICLE_COLORS)}
    return [Thing("train", t, box, style)]


def kerb_x(road: Road, rng: np.random.Generator, offset: float) -> float:
    """Lateral position `offset` metres outside a random road edge (sidewalk or verge)."""
    if rng.random() < 0.5:
        return road.left_m - SHOULDER_M - offset
    return road.right_m + SHOULDER_M + offset


def place_people(cam: Camera, road: Road, rng: np.random.Generator, n: int) -> list[Thing]:
    things = []
    for _ in range(n):
        x = kerb_x(road, rng, rng.uniform(0.3, max(0.6, road.sidewalk_m - 0.3)))
        t = t_at_depth(cam, log_depth(rng, 6.0, 50.0))
        box = box_at(cam, x, t, rng.uniform(0.45, 0.6), rng.uniform(1.6, 1.9))
        style = {
            "shirt": _color(rng, SHIRTS),
            "legs": _color(rng, ((40, 40, 60), (70, 60, 50))),
            "skin": _color(rng, SKINS),
        }
        if inside_fraction(box, cam.w, cam.h) > 0.5:
            things.append(Thing("person", t, box, style))
    return things


def place_two_wheeler(cam: Camera, road: Road, rng: np.random.Generator) -> list[Thing]:
    """A rider and a bike or motor: two labels at the same depth (the rider drawn on top)."""
    kind = "bike" if rng.random() < 0.5 else "motor"
    x = road.right_m - rng.uniform(0.6, 1.2)
    t = t_at_depth(cam, log_depth(rng, 8.0, 40.0))
    w = 0.5 if kind == "bike" else 0.75
    vehicle = box_at(cam, x, t, w, 1.05 if kind == "bike" else 1.2)
    rider = box_at(cam, x, t, 0.55, 1.3, lift_m=0.45)
    if inside_fraction(vehicle, cam.w, cam.h) < 0.5:
        return []
    look = {"shirt": _color(rng, SHIRTS), "legs": (40, 40, 60), "skin": _color(rng, SKINS)}
    return [
        Thing(kind, t, vehicle, {"color": _color(rng, VEHICLE_COLORS)}),
        Thing("rider", t, rider, look),
    ]


def place_signs(cam: Camera, road: Road, rng: np.random.Generator, n: int) -> list[Thing]:
    shapes = (
        ("circle", (240, 240, 240), (200, 20, 20)),
        ("triangle", (245, 245, 240), (210, 30, 30)),
        ("square", (30, 80, 200), (240, 240, 240)),
        ("square", (20, 120, 60), (235, 235, 235)),
    )
    things = []
    for _ in range(n):
        shape, color, rim = shapes[int(rng.integers(len(shapes)))]
        x = kerb_x(road, rng, rng.uniform(0.3, 2.0))
        t = t_at_depth(cam, log_depth(rng, 8.0, 70.0))
        size = rng.uniform(0.6, 0.9)
        box = box_at(cam, x, t, size, size, lift_m=rng.uniform(1.9, 2.6))
        style = {
            "shape": shape,
            "color": color,
            "rim": rim,
            "pole_w": 0.08 * t * cam.scale,
            "ground_y": int(round(float(cam.y_of(t)))),
        }
        if inside_fraction(box, cam.w, cam.h) > 0.6:
            things.append(Thing("traffic sign", t, box, style))
    return things


def place_lights(cam: Camera, road: Road, rng: np.random.Generator, n: int) -> list[Thing]:
    things = []
    for _ in range(n):
        x = kerb_x(road, rng, rng.uniform(0.2, 1.0))
        t = t_at_depth(cam, log_depth(rng, 10.0, 70.0))
        box = box_at(cam, x, t, 0.35, 0.95, lift_m=rng.uniform(2.8, 4.2))
        style = {
            "lit": str(rng.choice(["red", "yellow", "green"])),
            "pole_w": 0.1 * t * cam.scale,
            "ground_y": int(round(float(cam.y_of(t)))),
        }
        if inside_fraction(box, cam.w, cam.h) > 0.6:
            things.append(Thing("traffic light", t, box, style))
    return things


def place_trees(cam: Camera, road: Road, rng: np.random.Generator, n: int) -> list[Thing]:
    things = []
    for _ in range(n):
        x = kerb_x(road, rng, road.sidewalk_m + rng.uniform(1.0, 8.0))
        t = t_at_depth(cam, log_depth(rng, 8.0, 90.0))
        box = box_at(cam, x, t, rng.uniform(2.5, 4.5), rng.uniform(4.0, 8.0))
        green = (int(rng.integers(30, 70)), int(rng.integers(90, 140)), int(rng.integers(30, 60)))
        things.append(Thing("tree", t, box, {"green": green}, labeled=False))
    return things


def place_lamps(cam: Camera, road: Road, rng: np.random.Generator, n: int) -> list[Thing]:
    things = []
    for _ in range(n):
        right = rng.random() < 0.5
        edge = road.right_m + SHOULDER_M + 0.3 if right else road.left_m - SHOULDER_M - 0.3
        t = t_at_depth(cam, log_depth(rng, 8.0, 80.0))
        arm = rng.uniform(1.2, 2.0)
        box = box_at(cam, edge - arm / 2 if right else edge + arm / 2, t, arm, rng.uniform(6, 8))
        things.append(Thing("lamp", t, box, {"pole_right": right}, labeled=False))
    return things
