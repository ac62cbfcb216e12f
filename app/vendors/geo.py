"""Great-circle distance and the bounding boxes that let an index find what is near.

Distances use the haversine formula on a sphere of the Earth's mean radius (IUGG, 6371.0088 km).
A box is computed as in J. P. Matuschek's "Finding Points Within a Distance of a
Latitude/Longitude Using Bounding Coordinates": a latitude band, and a longitude band that is
split in two where it crosses the antimeridian and widened to every longitude where the circle
holds a pole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

EARTH_RADIUS_KM = 6371.0088
MAX_RADIUS_KM = math.pi * EARTH_RADIUS_KM  # half the circumference: the whole globe


def haversine_km(lat1: float, long1: float, lat2: float, long2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(long2 - long1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


@dataclass(frozen=True)
class Box:
    min_lat: float
    max_lat: float
    longs: tuple[tuple[float, float], ...]  # one or two [min, max] ranges; () for every longitude


def bounding_box(lat: float, long: float, radius_km: float) -> Box:
    """Every point within `radius_km` of (lat, long) lies in the box (a little more may too)."""
    # A hair wider than exact, so that rounding never drops a point on the edge.
    angle = radius_km / EARTH_RADIUS_KM * (1 + 1e-9) + 1e-12
    phi, lam = math.radians(lat), math.radians(long)
    low, high = phi - angle, phi + angle
    if low <= -math.pi / 2 or high >= math.pi / 2 or angle >= math.pi / 2:
        # The circle holds a pole: every longitude, latitudes up to that pole.
        return Box(math.degrees(max(low, -math.pi / 2)), math.degrees(min(high, math.pi / 2)), ())
    delta = math.asin(min(1.0, math.sin(angle) / math.cos(phi)))
    west, east = lam - delta, lam + delta
    ranges: tuple[tuple[float, float], ...]
    if west < -math.pi:
        ranges = ((math.degrees(west + 2 * math.pi), 180.0), (-180.0, math.degrees(east)))
    elif east > math.pi:
        ranges = ((math.degrees(west), 180.0), (-180.0, math.degrees(east - 2 * math.pi)))
    else:
        ranges = ((math.degrees(west), math.degrees(east)),)
    return Box(math.degrees(low), math.degrees(high), ranges)


def in_box(lat: float, long: float, *, min_lat: float, max_lat: float, min_long: float, max_long: float) -> bool:
    """A map's box; `min_long > max_long` means the box crosses the antimeridian."""
    if not min_lat <= lat <= max_lat:
        return False
    if min_long <= max_long:
        return min_long <= long <= max_long
    return long >= min_long or long <= max_long
