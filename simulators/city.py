"""A real district's street grid for the vehicle simulator: intersections, street segments, routes.

The default district is Beijing Chaoyang between the East 3rd Ring and the East 5th Ring
(116.45-116.55 E, 39.90-39.96 N), which holds Annex A's own example position (116.544608 E,
39.924109 N). Its arterials run close to north-south and east-west, so the district is modelled as
a grid of straight street lines at the arterials' approximate positions (real names, positions
rounded to ~100 m: good enough for believable tracks, not for navigation). Every street spans the
district, so every crossing of a north-south and an east-west street is an intersection and any two
intersections are joined by an L-shaped route along two streets.

Distances use the local metric scale of the WGS-84 ellipsoid at the district's centre latitude
(~111.0 km per degree of latitude, ~85.5 km per degree of longitude at 39.93 N); over 8 km the
error of treating the district as flat is below a metre.

    >>> city = chaoyang()
    >>> len(city.ns_streets), len(city.ew_streets)
    (12, 9)
    >>> round(city.distance_m(city.node(0, 0), city.node(1, 0)))
    855
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass

__all__ = ["City", "Route", "Street", "chaoyang"]


@dataclass(frozen=True, slots=True)
class Street:
    """A straight street line: north-south streets sit at a longitude, east-west ones at a latitude."""

    name: str
    at_deg: float


@dataclass(frozen=True, slots=True)
class Route:
    """A path along streets: intersection indices, their coordinates and cumulative distance (m)."""

    nodes: tuple[int, ...]
    points: tuple[tuple[float, float], ...]  # (lat, lon) per node
    cumulative_m: tuple[float, ...]

    @property
    def length_m(self) -> float:
        return self.cumulative_m[-1]

    def position(self, distance_m: float) -> tuple[float, float]:
        """(lat, lon) after ``distance_m`` along the route, clamped to its ends; always on a street."""
        if distance_m <= 0 or len(self.points) == 1:
            return self.points[0]
        if distance_m >= self.length_m:
            return self.points[-1]
        i = bisect.bisect_right(self.cumulative_m, distance_m) - 1
        start, end = self.cumulative_m[i], self.cumulative_m[i + 1]
        f = (distance_m - start) / (end - start)
        (lat0, lon0), (lat1, lon1) = self.points[i], self.points[i + 1]
        return lat0 + (lat1 - lat0) * f, lon0 + (lon1 - lon0) * f


class City:
    """A street grid. Intersection ``node(i, j)`` is north-south street ``i`` crossing east-west street ``j``;
    nodes are numbered ``j * len(ns_streets) + i``."""

    def __init__(self, name: str, ns_streets: list[Street], ew_streets: list[Street], *,
                 altitude_m: float = 40.0) -> None:
        if len(ns_streets) < 2 or len(ew_streets) < 2:
            raise ValueError("a street grid needs at least two streets each way")
        self.name = name
        self.ns_streets = sorted(ns_streets, key=lambda s: s.at_deg)
        self.ew_streets = sorted(ew_streets, key=lambda s: s.at_deg)
        self.altitude_m = altitude_m
        lat0 = (self.ew_streets[0].at_deg + self.ew_streets[-1].at_deg) / 2
        phi = math.radians(lat0)
        # WGS-84 metres per degree at the centre latitude.
        self.m_per_deg_lat = 111_132.92 - 559.82 * math.cos(2 * phi) + 1.175 * math.cos(4 * phi)
        self.m_per_deg_lon = 111_412.84 * math.cos(phi) - 93.5 * math.cos(3 * phi)
        self.bounds = (self.ew_streets[0].at_deg, self.ns_streets[0].at_deg,
                       self.ew_streets[-1].at_deg, self.ns_streets[-1].at_deg)  # south, west, north, east

    @property
    def node_count(self) -> int:
        return len(self.ns_streets) * len(self.ew_streets)

    def node(self, i: int, j: int) -> int:
        return j * len(self.ns_streets) + i

    def grid_index(self, node: int) -> tuple[int, int]:
        return node % len(self.ns_streets), node // len(self.ns_streets)

    def point(self, node: int) -> tuple[float, float]:
        """(lat, lon) of an intersection."""
        i, j = self.grid_index(node)
        return self.ew_streets[j].at_deg, self.ns_streets[i].at_deg

    def altitude(self, lat: float, lon: float) -> float:
        """Ground height (m): the district is flat, within a few metres of ``altitude_m``."""
        return round(self.altitude_m + 3 * math.sin(lat * 900) + 2 * math.cos(lon * 700), 1)

    def distance_m(self, a: int, b: int) -> float:
        """Distance along streets (the grid's Manhattan distance) between two intersections."""
        (lat_a, lon_a), (lat_b, lon_b) = self.point(a), self.point(b)
        return abs(lat_a - lat_b) * self.m_per_deg_lat + abs(lon_a - lon_b) * self.m_per_deg_lon

    def nearest_node(self, lat: float, lon: float) -> int:
        """The intersection closest to a coordinate (clamped to the district)."""
        i = min(range(len(self.ns_streets)), key=lambda k: abs(self.ns_streets[k].at_deg - lon))
        j = min(range(len(self.ew_streets)), key=lambda k: abs(self.ew_streets[k].at_deg - lat))
        return self.node(i, j)

    def contains(self, lat: float, lon: float) -> bool:
        south, west, north, east = self.bounds
        return south <= lat <= north and west <= lon <= east

    def on_street(self, lat: float, lon: float, tolerance_deg: float = 2e-6) -> bool:
        """True if the coordinate lies on one of the street lines (inside the district)."""
        return self.contains(lat, lon) and (
            any(abs(s.at_deg - lon) <= tolerance_deg for s in self.ns_streets)
            or any(abs(s.at_deg - lat) <= tolerance_deg for s in self.ew_streets))

    def route(self, a: int, b: int, rng: random.Random) -> Route:
        """An L-shaped route from ``a`` to ``b`` through every intersection passed: east-west first or
        north-south first, as ``rng`` decides (riders do not all take the same corner)."""
        (ia, ja), (ib, jb) = self.grid_index(a), self.grid_index(b)
        path = [a]
        if rng.random() < 0.5:
            path += [self.node(i, ja) for i in _steps(ia, ib)]
            path += [self.node(ib, j) for j in _steps(ja, jb)]
        else:
            path += [self.node(ia, j) for j in _steps(ja, jb)]
            path += [self.node(i, jb) for i in _steps(ia, ib)]
        points = tuple(self.point(n) for n in path)
        cumulative = [0.0]
        for prev, nxt in zip(path, path[1:]):
            cumulative.append(cumulative[-1] + self.distance_m(prev, nxt))
        return Route(tuple(path), points, tuple(cumulative))


def _steps(start: int, end: int) -> range:
    """Indices after ``start`` up to and including ``end``, in the direction of travel."""
    return range(start + 1, end + 1) if end >= start else range(start - 1, end - 1, -1)


def chaoyang() -> City:
    """Beijing Chaoyang, East 3rd Ring to East 5th Ring, Jianguo Road to Liangmaqiao (116.45-116.55 E,
    39.90-39.96 N). Street positions are approximate (rounded to ~0.001 degree)."""
    ns = [
        Street("Dongdaqiao Road", 116.451), Street("East 3rd Ring Road", 116.461),
        Street("Jintai Road", 116.469), Street("Xidawang Road", 116.476),
        Street("East 4th Ring Road", 116.487), Street("Baiziwan Road", 116.497),
        Street("Gaobeidian North Road", 116.507), Street("Shuangqiao Road", 116.517),
        Street("Dingfuzhuang Road", 116.527), Street("East 5th Ring Road", 116.536),
        Street("Changying Road", 116.545), Street("Guanzhuang Road", 116.550),
    ]
    ew = [
        Street("Jianguo Road", 39.905), Street("Guanghua Road", 39.913),
        Street("Chaoyang Road", 39.920), Street("Chaoyang North Road", 39.924),
        Street("Chaoyangmen Outer Street East", 39.930), Street("Tuanjiehu Road", 39.936),
        Street("Nongzhanguan North Road", 39.943), Street("Liangmaqiao Road", 39.950),
        Street("Jiangtai Road", 39.958),
    ]
    return City("Beijing Chaoyang", ns, ew, altitude_m=40.0)
