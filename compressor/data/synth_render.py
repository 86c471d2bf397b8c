"""One synthetic frame: picture, masks and the BDD per-image label, rendered from one Generator.

Painter's order: sky, skyline, ground, road, lane paint, then standing objects far to near, then
lighting and weather. Masks come from geometry, not from the picture: drivable is the visible road
(objects standing on it cut it out), lanes are the full lines (kept under vehicles, like BDD100K).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compressor.data.synth_draw import DRAWERS, Canvas, Light
from compressor.data.synth_effects import GRASS, draw_sky, draw_skyline, finish, sample_attributes
from compressor.data.synth_objects import (
    Thing,
    place_lamps,
    place_lights,
    place_people,
    place_signs,
    place_train,
    place_trees,
    place_two_wheeler,
    place_vehicles,
)
from compressor.data.synth_scene import (
    Camera,
    Road,
    draw_ground,
    draw_lane_masks,
    draw_road,
    lane_poly2d,
    paint_lane,
    sample_camera,
    sample_road,
)

# Object counts (low, high) per scene type.
SCENE_COUNTS: dict[str, dict[str, tuple[int, int]]] = {
    "city street": {
        "vehicles": (2, 8),
        "people": (1, 6),
        "signs": (0, 3),
        "lights": (0, 3),
        "trees": (0, 3),
        "lamps": (1, 4),
        "two_wheelers": (0, 1),
    },
    "highway": {
        "vehicles": (3, 9),
        "people": (0, 0),
        "signs": (0, 2),
        "lights": (0, 0),
        "trees": (3, 10),
        "lamps": (0, 3),
        "two_wheelers": (0, 0),
    },
    "residential": {
        "vehicles": (1, 5),
        "people": (0, 3),
        "signs": (0, 2),
        "lights": (0, 1),
        "trees": (3, 10),
        "lamps": (0, 2),
        "two_wheelers": (0, 1),
    },
}
TRAIN_PROB = 0.12
OCCLUDED_IF_HIDDEN = 0.05  # fraction of an object's own pixels hidden by nearer ones
DROP_IF_VISIBLE_BELOW = 0.1  # nearly hidden objects get no label (BDD labels what is visible)


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    drivable: np.ndarray  # (H, W) uint8, 0 background / 255 drivable
    lane_wide: np.ndarray  # (H, W) uint8, 0 / 255
    lane_thin: np.ndarray
    label: dict  # BDD per-image label JSON


def sample_things(cam: Camera, road: Road, scene: str, rng: np.random.Generator) -> list[Thing]:
    n = {k: int(rng.integers(lo, hi + 1)) for k, (lo, hi) in SCENE_COUNTS[scene].items()}
    things = place_vehicles(cam, road, rng, n["vehicles"])
    if scene != "residential" and rng.random() < TRAIN_PROB:
        things += place_train(cam, road, rng)
    if road.sidewalk_m:
        things += place_people(cam, road, rng, n["people"])
    for _ in range(n["two_wheelers"]):
        things += place_two_wheeler(cam, road, rng)
    things += place_signs(cam, road, rng, n["signs"])
    things += place_lights(cam, road, rng, n["lights"])
    things += place_trees(cam, road, rng, n["trees"])
    things += place_lamps(cam, road, rng, n["lamps"])
    return sorted(things, key=lambda th: th.t)  # stable: far first, rider after its bike


def _clip(box, w: int, h: int) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = box
    return max(0, x1), max(0, y1), min(w, x2), min(h, y2)


def draw_things(canvas: Canvas, things: list[Thing]) -> tuple[list[Light], list[int]]:
    """Draw far to near; returns light sources and each object's own pixel count at draw time."""
    h, w = canvas.owner.shape
    lights: list[Light] = []
    own: list[int] = []
    for i, th in enumerate(things):
        canvas.current = i
        lights += DRAWERS[th.kind](canvas, th.box, th.style)
        x1, y1, x2, y2 = _clip(th.box, w, h)
        own.append(int((canvas.owner[y1:y2, x1:x2] == i).sum()))
    return lights, own


def object_labels(canvas: Canvas, things: list[Thing], own: list[int]) -> list[dict]:
    h, w = canvas.owner.shape
    out = []
    for i, th in enumerate(things):
        if not th.labeled or own[i] == 0:
            continue
        x1, y1, x2, y2 = _clip(th.box, w, h)
        visible = int((canvas.owner[y1:y2, x1:x2] == i).sum()) / own[i]
        if x2 <= x1 or y2 <= y1 or visible < DROP_IF_VISIBLE_BELOW:
            continue
        attrs = {
            "occluded": bool(visible < 1 - OCCLUDED_IF_HIDDEN),
            "truncated": bool((x1, y1, x2, y2) != tuple(th.box)),
            "trafficLightColor": th.style.get("lit", "none"),
        }
        box = {"x1": float(x1), "y1": float(y1), "x2": float(x2), "y2": float(y2)}
        out.append({"category": th.kind, "id": len(out), "attributes": attrs, "box2d": box})
    return out


def poly_labels(cam: Camera, road: Road, road_poly: np.ndarray, first_id: int) -> list[dict]:
    """Lane lines and the drivable area as poly2d records, as in BDD100K's per-image JSON."""
    out = []
    for line in road.lines:
        attrs = {
            "laneDirection": "parallel",
            "laneStyle": "dashed" if line.dashed else "solid",
            "laneType": line.kind,
        }
        out.append(
            {
                "category": f"lane/{line.kind}",
                "id": first_id + len(out),
                "attributes": attrs,
                "poly2d": lane_poly2d(cam, line),
            }
        )
    verts = [[float(x), float(y)] for x, y in road_poly[:: max(1, len(road_poly) // 16)]]
    out.append(
        {
            "category": "area/drivable",
            "id": first_id + len(out),
            "attributes": {"areaType": "direct"},
            "poly2d": [{"vertices": verts, "types": "L" * len(verts), "closed": True}],
        }
    )
    return out


def render_frame(
    name: str, w: int, h: int, lane_wide_px: int, lane_thin_px: int, rng: np.random.Generator
) -> Frame:
    attrs = sample_attributes(rng)
    cam = sample_camera(w, h, rng)
    road = sample_road(rng, attrs["scene"])
    img = np.empty((h, w, 3), np.uint8)
    draw_sky(img, cam, attrs, rng)
    lights = draw_skyline(img, cam, attrs["scene"], attrs["timeofday"] == "night", rng)
    draw_ground(img, cam, road, GRASS[int(rng.integers(len(GRASS)))])
    drivable = np.zeros((h, w), np.uint8)
    road_poly = draw_road(img, drivable, cam, road)
    for line in road.lines:
        paint_lane(img, cam, line)
    wide, thin = np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)
    draw_lane_masks(wide, thin, cam, road, lane_wide_px, lane_thin_px)
    things = sample_things(cam, road, attrs["scene"], rng)
    canvas = Canvas(img)
    more_lights, own = draw_things(canvas, things)
    drivable[canvas.owner >= 0] = 0
    objects = object_labels(canvas, things, own)
    objects += poly_labels(cam, road, road_poly, len(objects))
    image = finish(img, cam, attrs, lights + more_lights, rng)
    label = {
        "name": name,
        "frames": [{"timestamp": 10000, "objects": objects}],
        "attributes": attrs,
    }
    return Frame(image, drivable, wide, thin, label)
