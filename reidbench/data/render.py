"""Procedural ReID images: people and vehicles with persistent identities seen by varied cameras.

An identity is a fixed set of appearance parameters (body proportions, clothing colours and
patterns, accessories; for vehicles body type, colour and marks). A camera is a fixed set of
imaging conditions (viewpoint, scale, illumination, colour cast, background, blur). Every image
draws its own pose, position and noise. Nothing identity-specific is written at a fixed pixel:
identity shows only through the rendered appearance, which camera conditions distort.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

PERSON_SIZE = (128, 64)
VEHICLE_SIZE = (128, 128)
PATTERNS = ("solid", "hstripes", "vstripes", "checks", "blocks")
VEHICLE_COLOURS = np.array([[235, 235, 235], [25, 25, 28], [160, 162, 168], [180, 30, 30],
                            [30, 60, 150], [40, 110, 60], [210, 180, 40], [120, 70, 40],
                            [90, 90, 95], [200, 110, 30]], np.float32)


def _colour(rng: np.random.Generator) -> np.ndarray:
    """A random clothing colour, biased towards the muted tones of real street clothes."""
    base = rng.uniform(0, 255, 3)
    grey = base.mean()
    muted = grey + (base - grey) * rng.uniform(0.3, 1.0)
    return np.clip(muted * rng.uniform(0.4, 1.1), 0, 255).astype(np.float32)


@dataclass(frozen=True)
class Person:
    height: float
    width: float
    skin: np.ndarray
    hair: np.ndarray
    shirt: np.ndarray
    shirt2: np.ndarray
    pattern: str
    period: int
    trousers: np.ndarray
    shorts: bool
    short_sleeves: bool
    shoes: np.ndarray
    bag: str  # none | backpack | handbag
    bag_colour: np.ndarray
    hat: bool
    hat_colour: np.ndarray


def make_person(rng: np.random.Generator) -> Person:
    skin_tone = rng.uniform(0.35, 1.0)
    return Person(
        height=rng.uniform(0.78, 0.92), width=rng.uniform(0.8, 1.25),
        skin=np.array([230, 190, 160], np.float32) * skin_tone,
        hair=np.array([40, 30, 20], np.float32) * rng.uniform(0.3, 3.0),
        shirt=_colour(rng), shirt2=_colour(rng), pattern=PATTERNS[rng.integers(len(PATTERNS))],
        period=int(rng.integers(3, 8)), trousers=_colour(rng), shorts=bool(rng.random() < 0.25),
        short_sleeves=bool(rng.random() < 0.4), shoes=_colour(rng) * 0.5,
        bag=("none", "backpack", "handbag")[rng.integers(3)], bag_colour=_colour(rng),
        hat=bool(rng.random() < 0.15), hat_colour=_colour(rng),
    )


@dataclass(frozen=True)
class Vehicle:
    body: str  # sedan | suv | van | truck
    colour: np.ndarray
    stripe: np.ndarray | None
    roof_rack: bool
    sticker: tuple[float, float, np.ndarray] | None
    wheels: np.ndarray


def make_vehicle(rng: np.random.Generator) -> Vehicle:
    colour = VEHICLE_COLOURS[rng.integers(len(VEHICLE_COLOURS))] * rng.uniform(0.85, 1.1)
    return Vehicle(
        body=("sedan", "suv", "van", "truck")[rng.integers(4)],
        colour=np.clip(colour, 0, 255).astype(np.float32),
        stripe=_colour(rng) if rng.random() < 0.3 else None,
        roof_rack=bool(rng.random() < 0.3),
        sticker=(float(rng.uniform(0.1, 0.8)), float(rng.uniform(0.2, 0.7)), _colour(rng))
        if rng.random() < 0.5 else None,
        wheels=np.array([30, 30, 30], np.float32) * rng.uniform(0.8, 2.5),
    )


@dataclass(frozen=True)
class Camera:
    view: str  # front | back | side
    scale: float
    gain: float
    cast: np.ndarray
    background: np.ndarray
    background2: np.ndarray
    floor: float
    blur: int
    noise: float


def make_camera(rng: np.random.Generator) -> Camera:
    return Camera(
        view=("front", "back", "side")[rng.integers(3)], scale=rng.uniform(0.85, 1.0),
        gain=rng.uniform(0.65, 1.25), cast=rng.uniform(-28, 28, 3).astype(np.float32),
        background=rng.uniform(40, 200, 3).astype(np.float32),
        background2=rng.uniform(40, 200, 3).astype(np.float32), floor=rng.uniform(0.7, 0.95),
        blur=int(rng.choice([0, 0, 1, 2])), noise=float(rng.uniform(2, 9)),
    )


@lru_cache(maxsize=4)
def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:height, 0:width]
    return yy.astype(np.float32), xx.astype(np.float32)


def _background(camera: Camera, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    height, width = size
    yy, xx = _grid(height, width)
    floor = int(height * (camera.floor + rng.uniform(-0.04, 0.04)))
    image = np.empty((height, width, 3), np.float32)
    ramp = (yy[:floor] / max(1, floor))[..., None]
    image[:floor] = camera.background * (0.8 + 0.3 * ramp)
    image[floor:] = camera.background2
    # a tiled texture, shifted per image
    shift = int(rng.integers(0, 16))
    image += _tiles(height, width)[shift : shift + height, shift : shift + width]
    return image


@lru_cache(maxsize=4)
def _tiles(height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[0 : height + 16, 0 : width + 16]
    return (12.0 * ((xx // 16 + yy // 16) % 2) - 6.0).astype(np.float32)[..., None]


def _fill(image: np.ndarray, y0: float, y1: float, x0: float, x1: float, colour: np.ndarray) -> None:
    h, w = image.shape[:2]
    a, b = int(max(0, round(y0))), int(min(h, round(y1)))
    c, d = int(max(0, round(x0))), int(min(w, round(x1)))
    if a < b and c < d:
        image[a:b, c:d] = colour


def _pattern(region: np.ndarray, person: Person, offset: int) -> None:
    h, w = region.shape[:2]
    if person.pattern == "solid" or h == 0 or w == 0:
        region[:] = person.shirt
        return
    yy, xx = _grid(h, w)
    p = person.period
    if person.pattern == "hstripes":
        mask = ((yy + offset) // p) % 2 == 0
    elif person.pattern == "vstripes":
        mask = ((xx + offset) // p) % 2 == 0
    elif person.pattern == "checks":
        mask = (((yy + offset) // p) + (xx // p)) % 2 == 0
    else:  # two-colour blocks: top half / bottom half
        mask = yy < h * 0.5
    region[:] = np.where(mask[..., None], person.shirt, person.shirt2)


def render_person(person: Person, camera: Camera, rng: np.random.Generator,
                  size: tuple[int, int] = PERSON_SIZE) -> np.ndarray:
    height, width = size
    image = _background(camera, size, rng)
    view = camera.view if rng.random() < 0.8 else ("front", "back", "side")[rng.integers(3)]
    h = height * person.height * camera.scale * rng.uniform(0.93, 1.05)
    top = (height - h) * rng.uniform(0.2, 0.8)
    cx = width / 2 + rng.uniform(-4, 4) * width / 64
    body_w = h * 0.26 * person.width * (0.65 if view == "side" else 1.0)
    # legs
    leg_top, leg_bottom = top + 0.5 * h, top + 0.95 * h
    spread = rng.uniform(0, 0.5) * body_w * 0.5
    leg_w = body_w * 0.42
    for side in (-1, 1):
        x0 = cx + side * spread / 2 + (0 if side > 0 else -leg_w)
        _fill(image, leg_top, leg_bottom, x0, x0 + leg_w, person.trousers)
        if person.shorts:
            _fill(image, leg_top + 0.45 * (leg_bottom - leg_top), leg_bottom, x0, x0 + leg_w, person.skin)
        _fill(image, leg_bottom - 0.05 * h, leg_bottom, x0 - 1, x0 + leg_w + 1, person.shoes)
    # torso with its pattern, arms beside it
    t0, t1 = top + 0.15 * h, top + 0.52 * h
    a, b = int(max(0, t0)), int(min(height, t1))
    c, d = int(max(0, cx - body_w / 2)), int(min(width, cx + body_w / 2))
    if a < b and c < d:
        _pattern(image[a:b, c:d], person, int(rng.integers(0, person.period)))
    arm_w = max(2.0, body_w * 0.18)
    sleeve = person.skin if person.short_sleeves else person.shirt
    for side in (-1, 1):
        x0 = cx + side * body_w / 2 + (0 if side > 0 else -arm_w)
        _fill(image, t0 + 1, t1 + 0.08 * h, x0, x0 + arm_w, sleeve)
        if person.short_sleeves:
            _fill(image, t0 + 1, t0 + 0.1 * h, x0, x0 + arm_w, person.shirt)
    # head, hair, hat
    yy, xx = _grid(height, width)
    r = h * 0.075
    cy = top + 0.075 * h
    head = ((xx - cx) / (r * 0.85)) ** 2 + ((yy - cy) / r) ** 2 <= 1
    image[head] = person.skin
    hair = head & (yy < cy - (0.1 if view != "back" else -0.6) * r)
    image[hair] = person.hair
    if person.hat:
        _fill(image, cy - r * 1.2, cy - r * 0.3, cx - r, cx + r, person.hat_colour)
    # accessories: what a camera sees of a bag depends on its viewpoint
    if person.bag == "backpack":
        if view == "back":
            _fill(image, t0 + 0.03 * h, t1 - 0.05 * h, cx - body_w * 0.35, cx + body_w * 0.35,
                  person.bag_colour)
        elif view == "side":
            _fill(image, t0 + 0.03 * h, t1 - 0.05 * h, cx + body_w / 2, cx + body_w * 0.9, person.bag_colour)
        else:
            _fill(image, t0, t1 - 0.1 * h, cx - body_w / 2, cx - body_w * 0.38, person.bag_colour)
    elif person.bag == "handbag":
        x0 = cx + body_w / 2 + arm_w * 0.5
        _fill(image, top + 0.45 * h, top + 0.62 * h, x0, x0 + body_w * 0.45, person.bag_colour)
    return _camera_effects(image, camera, rng)


def render_vehicle(vehicle: Vehicle, camera: Camera, rng: np.random.Generator,
                   size: tuple[int, int] = VEHICLE_SIZE) -> np.ndarray:
    height, width = size
    image = _background(camera, size, rng)
    image[int(height * 0.55):] = np.float32(95) + camera.background2 * 0.2  # road
    view = camera.view if rng.random() < 0.8 else ("front", "back", "side")[rng.integers(3)]
    s = camera.scale * rng.uniform(0.9, 1.05)
    tall = {"sedan": 0.32, "suv": 0.42, "van": 0.5, "truck": 0.48}[vehicle.body]
    w = width * (0.86 if view == "side" else 0.62) * s
    h = height * tall * s
    cx = width / 2 + rng.uniform(-6, 6)
    bottom = height * rng.uniform(0.78, 0.9)
    top = bottom - h
    x0, x1 = cx - w / 2, cx + w / 2
    _fill(image, top + 0.35 * h, bottom - 0.08 * h, x0, x1, vehicle.colour)  # body
    cabin = (0.15, 0.85) if view != "side" else ((0.25, 0.75) if vehicle.body == "sedan" else (0.05, 0.7))
    _fill(image, top, top + 0.38 * h, x0 + cabin[0] * w, x0 + cabin[1] * w, vehicle.colour)
    glass = np.array([40, 50, 60], np.float32)
    _fill(image, top + 0.06 * h, top + 0.34 * h, x0 + (cabin[0] + 0.05) * w,
          x0 + (cabin[1] - 0.05) * w, glass)
    if vehicle.body == "truck" and view == "side":
        _fill(image, top - 0.1 * h, bottom - 0.3 * h, x0 + 0.72 * w, x1, vehicle.colour * 0.8)
    if vehicle.stripe is not None:
        _fill(image, top + 0.55 * h, top + 0.62 * h, x0, x1, vehicle.stripe)
    if vehicle.roof_rack:
        _fill(image, top - 0.06 * h, top, x0 + cabin[0] * w, x0 + cabin[1] * w, np.float32([20, 20, 20]))
    if vehicle.sticker is not None and view != "front":
        sx, sy, colour = vehicle.sticker
        _fill(image, top + (0.4 + 0.3 * sy) * h, top + (0.5 + 0.3 * sy) * h,
              x0 + sx * w, x0 + (sx + 0.12) * w, colour)
    if view == "side":
        for fx in (0.2, 0.8):
            _fill(image, bottom - 0.2 * h, bottom, x0 + (fx - 0.08) * w, x0 + (fx + 0.08) * w,
                  vehicle.wheels)
    else:
        lamp = np.float32([250, 250, 210]) if view == "front" else np.float32([200, 20, 20])
        for fx in (0.05, 0.8):
            _fill(image, top + 0.5 * h, top + 0.62 * h, x0 + fx * w, x0 + (fx + 0.15) * w, lamp)
        _fill(image, bottom - 0.1 * h, bottom, x0 + 0.05 * w, x0 + 0.2 * w, vehicle.wheels)
        _fill(image, bottom - 0.1 * h, bottom, x0 + 0.8 * w, x0 + 0.95 * w, vehicle.wheels)
    return _camera_effects(image, camera, rng)


def _camera_effects(image: np.ndarray, camera: Camera, rng: np.random.Generator) -> np.ndarray:
    gain = camera.gain * rng.uniform(0.9, 1.1)
    image = image * gain + camera.cast + rng.uniform(-6, 6, 3).astype(np.float32)
    for _ in range(camera.blur):  # a 5-point cross blur per step (edges kept)
        blurred = image.copy()
        blurred[1:-1, 1:-1] = (image[:-2, 1:-1] + image[1:-1, 1:-1] + image[2:, 1:-1]
                               + image[1:-1, :-2] + image[1:-1, 2:]) * np.float32(0.2)
        image = blurred
    if rng.random() < 0.5:
        image = image[:, ::-1]
    image = image + rng.standard_normal(image.shape, dtype=np.float32) * np.float32(camera.noise)
    return np.clip(image, 0, 255).astype(np.uint8)


def occlude(image: np.ndarray, rng: np.random.Generator, other: np.ndarray | None = None) -> np.ndarray:
    """Paste an occluder over the lower or a side part of the body: an object or another person."""
    out = image.copy()
    height, width = out.shape[:2]
    if rng.random() < 0.5:  # lower part (cars, bins, railings)
        y0 = int(height * rng.uniform(0.45, 0.7))
        y1, x0, x1 = height, int(width * rng.uniform(0, 0.3)), width - int(width * rng.uniform(0, 0.3))
    else:  # a side
        x0 = int(width * rng.uniform(0.45, 0.6)) if rng.random() < 0.5 else 0
        x1 = width if x0 else int(width * rng.uniform(0.4, 0.55))
        y0, y1 = int(height * rng.uniform(0, 0.3)), height
    if other is not None and rng.random() < 0.4:
        out[y0:y1, x0:x1] = other[y0:y1, x0:x1]
    else:
        colour = rng.uniform(20, 235, 3)
        yy, xx = _grid(y1 - y0, x1 - x0)
        texture = ((yy // 6 + xx // 6) % 2)[..., None] * rng.uniform(0, 40)
        out[y0:y1, x0:x1] = np.clip(colour + texture, 0, 255).astype(np.uint8)
    return out


def crop_partial(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Keep the upper part of the body, as partial-ReID query crops do."""
    height = image.shape[0]
    return np.ascontiguousarray(image[: int(height * rng.uniform(0.45, 0.75))])
