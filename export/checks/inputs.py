"""Inputs for parity and FP16 checks: never the tracing input. A seeded random tensor exercises
every value range; a drawn road scene (sky, road, lane lines, car-like boxes) puts the network
in the regime it runs in, where masks and boxes are not noise."""

from __future__ import annotations

import numpy as np

from runtime.spec import IMAGENET_MEAN, IMAGENET_STD


def random_input(batch: int, imgsz: tuple[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, 3, *imgsz)).astype(np.float32)


def road_scene(imgsz: tuple[int, int], shift: int = 0) -> np.ndarray:
    """HxWx3 uint8 RGB: a synthetic driving frame, shifted sideways by `shift` pixels."""
    import cv2

    h, w = imgsz
    img = np.zeros((h, w, 3), np.uint8)
    horizon = h * 2 // 5
    sky = np.linspace(200.0, 120.0, horizon)[:, None, None] * np.array([1.0, 1.0, 1.2])
    img[:horizon] = sky.astype(np.uint8)
    img[horizon:] = (70, 110, 60)
    cx = w // 2 + shift
    road = np.array(
        [[cx - w // 12, horizon], [cx + w // 12, horizon], [w + w // 4, h], [-w // 4, h]], np.int32
    )
    cv2.fillPoly(img, [road], (90, 90, 95))
    for side in (-1, 1):
        top = (cx + side * w // 24, horizon)
        bottom = (cx + side * w // 2, h)
        cv2.line(img, top, bottom, (250, 250, 250), max(1, w // 160))
    for i, (fx, fy, fw) in enumerate(((0.35, 0.6, 0.12), (0.6, 0.55, 0.08), (0.5, 0.75, 0.2))):
        x0, y0, bw = int(fx * w) + shift, int(fy * h), max(4, int(fw * w))
        color = ((40 + 80 * i) % 255, 30, 160 - 40 * i)
        cv2.rectangle(img, (x0, y0), (x0 + bw, y0 + bw * 2 // 3), color, -1)
    return img


def normalise(
    img: np.ndarray, mean: tuple | list = IMAGENET_MEAN, std: tuple | list = IMAGENET_STD
) -> np.ndarray:
    """HxWx3 uint8 RGB -> 3xHxW float32 the way the runtime preprocesses."""
    scaled = img.astype(np.float32) / np.float32(255.0)
    x = (scaled - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def structured_input(
    batch: int,
    imgsz: tuple[int, int],
    mean: tuple | list = IMAGENET_MEAN,
    std: tuple | list = IMAGENET_STD,
) -> np.ndarray:
    step = max(1, imgsz[1] // 16)
    return np.stack([normalise(road_scene(imgsz, i * step), mean, std) for i in range(batch)])


def probe_cases(
    imgsz: tuple[int, int],
    batches: tuple[int, ...],
    seed: int,
    mean: tuple | list = IMAGENET_MEAN,
    std: tuple | list = IMAGENET_STD,
) -> list[tuple[str, np.ndarray]]:
    """(label, NCHW float32) for each batch size: one random, one structured. Seeds are offset
    from the tracing seed so no case equals the tracing input."""
    cases = []
    for b in dict.fromkeys(batches):
        cases.append((f"random-b{b}", random_input(b, imgsz, seed + 1000 + b)))
        cases.append((f"scene-b{b}", structured_input(b, imgsz, mean, std)))
    return cases
