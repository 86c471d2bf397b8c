"""Sky, distant skyline, lighting and weather of a synthetic frame. Lighting and weather act on
the finished picture only, never on the masks: a foggy night frame has the same labels as a clear
day one, which is what makes the variation useful to the model."""

from __future__ import annotations

import cv2
import numpy as np

from compressor.data.synth_draw import Light
from compressor.data.synth_scene import Camera

# BDD100K attribute values (frame level) and how often the generator uses them.
TIMES_OF_DAY: tuple[tuple[str, ...], tuple[float, ...]] = (
    ("daytime", "dawn/dusk", "night"),
    (0.6, 0.2, 0.2),
)
WEATHERS: tuple[tuple[str, ...], tuple[float, ...]] = (
    ("clear", "partly cloudy", "overcast", "rainy", "foggy", "snowy"),
    (0.45, 0.12, 0.15, 0.12, 0.08, 0.08),
)
SCENES: tuple[tuple[str, ...], tuple[float, ...]] = (
    ("city street", "highway", "residential"),
    (0.5, 0.25, 0.25),
)
SKY: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {  # (zenith, horizon) RGB
    "daytime": ((60, 120, 200), (185, 210, 235)),
    "dawn/dusk": ((70, 60, 120), (250, 160, 90)),
    "night": ((20, 25, 60), (70, 70, 110)),  # before the night gain
}
GREY_SKY = ((150, 155, 165), (205, 205, 210))
GRASS = ((70, 110, 50), (110, 100, 70), (90, 120, 60))


def sample_attributes(rng: np.random.Generator) -> dict[str, str]:
    return {
        "weather": str(rng.choice(WEATHERS[0], p=WEATHERS[1])),
        "scene": str(rng.choice(SCENES[0], p=SCENES[1])),
        "timeofday": str(rng.choice(TIMES_OF_DAY[0], p=TIMES_OF_DAY[1])),
    }


def draw_sky(img: np.ndarray, cam: Camera, attrs: dict[str, str], rng: np.random.Generator) -> None:
    top = max(1, int(round(cam.horizon)))
    grey = attrs["weather"] in ("overcast", "rainy", "foggy", "snowy")
    zenith, horizon = (
        GREY_SKY if grey and attrs["timeofday"] == "daytime" else SKY[attrs["timeofday"]]
    )
    a = np.linspace(0, 1, top, dtype=np.float32)[:, None, None]
    grad = (1 - a) * np.array(zenith, np.float32) + a * np.array(horizon, np.float32)
    img[:top] = grad.astype(np.uint8)
    if attrs["weather"] == "partly cloudy":
        for _ in range(int(rng.integers(2, 6))):
            c = (int(rng.uniform(0, cam.w)), int(rng.uniform(0.1, 0.7) * top))
            axes = (int(cam.w * rng.uniform(0.04, 0.12)), int(top * rng.uniform(0.04, 0.1)) + 1)
            cv2.ellipse(img, c, axes, 0, 0, 360, (235, 238, 242), -1)


def draw_skyline(
    img: np.ndarray, cam: Camera, scene: str, night: bool, rng: np.random.Generator
) -> list[Light]:
    """Distant buildings standing on the horizon (behind everything, so drawn before the road)."""
    counts = {"city street": (6, 14), "residential": (2, 6), "highway": (0, 3)}
    lo, hi = counts[scene]
    base = int(round(cam.horizon)) + 2
    lights: list[Light] = []
    for _ in range(int(rng.integers(lo, hi + 1))):
        w = int(cam.w * rng.uniform(0.04, 0.14))
        h = int(cam.horizon * rng.uniform(0.1, 0.6 if scene == "city street" else 0.25))
        x = int(rng.uniform(-0.05, 1.0) * cam.w)
        shade = int(rng.integers(90, 190))
        tone = (shade, int(shade * rng.uniform(0.85, 1.0)), int(shade * rng.uniform(0.75, 1.0)))
        cv2.rectangle(img, (x, base - h), (x + w, base), tone, -1)
        lights += _windows(img, (x, base - h, x + w, base), night, rng)
    return lights


def _windows(img: np.ndarray, box, night: bool, rng: np.random.Generator) -> list[Light]:
    """Window grid; lit at night (no halo: trees in front of a building would glow)."""
    x1, y1, x2, y2 = box
    step = max(4, (x2 - x1) // 6)
    lights: list[Light] = []
    if y2 - y1 < 3 * step:
        return lights
    for yy in range(y1 + step // 2, y2 - step, step):
        for xx in range(x1 + step // 3, x2 - step // 2, step):
            lit = night and rng.random() < 0.35
            col = (250, 220, 140) if lit else (60, 70, 85)
            cv2.rectangle(img, (xx, yy), (xx + step // 2, yy + step // 2), col, -1)
    return lights


def row_gain(cam: Camera, timeofday: str) -> np.ndarray:
    """Per-row brightness: uniform by day, darker at dusk; at night dark above the horizon and a
    headlight-lit foreground below it."""
    y = np.arange(cam.h, dtype=np.float32)
    t = np.clip((y - cam.horizon) / (cam.h - cam.horizon), 0, 1)
    if timeofday == "night":
        gain = np.where(y < cam.horizon, 0.4, 0.3 + 0.6 * t**0.6)
    elif timeofday == "dawn/dusk":
        gain = np.full_like(y, 0.8)
    else:
        gain = np.ones_like(y)
    return gain.astype(np.float32)[:, None, None]


def add_glow(img_f: np.ndarray, lights: list[Light]) -> None:
    """Soft halos around light sources, drawn at quarter resolution then blurred (cheap)."""
    h, w = img_f.shape[:2]
    small = np.zeros((h // 4 + 1, w // 4 + 1, 3), np.float32)
    for x, y, r, col in lights:
        cv2.circle(small, (x // 4, y // 4), max(1, r // 2 + 1), tuple(float(c) for c in col), -1)
    small = cv2.GaussianBlur(small, (0, 0), 2.0)
    img_f += 0.6 * cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def apply_weather(
    img_f: np.ndarray, cam: Camera, weather: str, rng: np.random.Generator
) -> np.ndarray:
    if weather == "foggy":
        y = np.arange(cam.h, dtype=np.float32)
        t = np.clip((y - cam.horizon) / (cam.h - cam.horizon), 0, 1)
        f = (rng.uniform(0.45, 0.75) * (1 - t) ** 1.5)[:, None, None]
        img_f = img_f * (1 - f) + 200.0 * f
    elif weather == "rainy":
        img_f *= 0.88
        _streaks(img_f, cam, rng, int(cam.w * cam.h / 3000), (200, 200, 210), 0.35)
    elif weather == "snowy":
        _streaks(img_f, cam, rng, int(cam.w * cam.h / 1500), (250, 250, 250), 0.8, flakes=True)
    elif weather == "overcast":
        img_f = img_f * 0.9 + 12.0
    return img_f


def _streaks(img_f, cam: Camera, rng, n: int, color, alpha: float, flakes: bool = False) -> None:
    layer = np.zeros(img_f.shape[:2], np.uint8)
    xs = rng.integers(0, cam.w, n)
    ys = rng.integers(0, cam.h, n)
    length = max(3, cam.h // 40)
    slant = rng.uniform(-0.3, 0.3)
    for x, y in zip(xs.tolist(), ys.tolist()):
        if flakes:
            cv2.circle(layer, (x, y), 1 + (x + y) % 2, 255, -1)
        else:
            cv2.line(layer, (x, y), (int(x + slant * length), y + length), 255, 1)
    a = (layer.astype(np.float32) * (alpha / 255.0))[..., None]
    img_f *= 1 - a
    img_f += a * np.array(color, np.float32)


def add_noise(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sensor noise, drawn at half resolution (4x fewer normals) and added with saturation."""
    h, w = img.shape[:2]
    small = rng.standard_normal((h // 2 + 1, w // 2 + 1), dtype=np.float32)
    small *= rng.uniform(2.0, 5.0)
    n16 = np.rint(cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)).astype(np.int16)
    return cv2.add(img, cv2.merge([n16, n16, n16]), dtype=cv2.CV_8U)


FLOAT_WEATHER = ("foggy", "rainy", "snowy", "overcast")


def finish(
    img: np.ndarray,
    cam: Camera,
    attrs: dict[str, str],
    lights: list[Light],
    rng: np.random.Generator,
) -> np.ndarray:
    """Lighting, light halos, weather and sensor noise; returns the final uint8 RGB frame.
    Clear daytime frames skip the float pass (the common case, and the costly part)."""
    if attrs["timeofday"] != "daytime" or attrs["weather"] in FLOAT_WEATHER:
        img_f = img.astype(np.float32)
        if attrs["timeofday"] != "daytime":
            img_f *= row_gain(cam, attrs["timeofday"])
            if lights:
                add_glow(img_f, lights)
        img_f = apply_weather(img_f, cam, attrs["weather"], rng)
        img = np.clip(img_f, 0, 255, out=img_f).astype(np.uint8)
    return add_noise(img, rng)
