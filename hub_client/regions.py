"""Ordering backup regions by distance from a user, as the hub does when it picks a bucket.

The user's location is what an edge proxy tells the hub: an ISO 3166-1 alpha-2 country code
(e.g. Cloudflare's ``CF-IPCountry``) or a latitude/longitude pair. Regions are points (a table of
region coordinates from the hub's configuration, :data:`DEFAULT_REGIONS` when it has none), and
the order is by great-circle distance, nearest first; ties keep the table's order.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Mapping

EARTH_RADIUS_KM = 6371.0


@dataclass(frozen=True)
class Point:
    lat: float
    lon: float

    def __post_init__(self) -> None:
        if not (-90.0 <= self.lat <= 90.0 and -180.0 <= self.lon <= 180.0):
            raise ValueError(f"not a latitude/longitude: {self.lat}, {self.lon}")


# Where the buckets of each backup region are (approximately): Cloudflare R2's location hints.
DEFAULT_REGIONS: dict[str, Point] = {
    "wnam": Point(37.4, -122.1),   # western North America (San Jose)
    "enam": Point(39.0, -77.5),    # eastern North America (Ashburn)
    "weur": Point(50.1, 8.7),      # western Europe (Frankfurt)
    "eeur": Point(52.2, 21.0),     # eastern Europe (Warsaw)
    "apac": Point(1.35, 103.8),    # Asia-Pacific (Singapore)
    "oc": Point(-33.9, 151.2),     # Oceania (Sydney)
}

# A representative point (the capital or main population centre) per country code.
COUNTRIES: dict[str, Point] = {
    "AE": Point(25.2, 55.3), "AR": Point(-34.6, -58.4), "AT": Point(48.2, 16.4), "AU": Point(-33.9, 151.2),
    "BD": Point(23.8, 90.4), "BE": Point(50.8, 4.4), "BG": Point(42.7, 23.3), "BR": Point(-23.5, -46.6),
    "CA": Point(43.7, -79.4), "CH": Point(47.4, 8.5), "CL": Point(-33.4, -70.7), "CN": Point(31.2, 121.5),
    "CO": Point(4.7, -74.1), "CZ": Point(50.1, 14.4), "DE": Point(50.1, 8.7), "DK": Point(55.7, 12.6),
    "DZ": Point(36.8, 3.1), "EE": Point(59.4, 24.8), "EG": Point(30.0, 31.2), "ES": Point(40.4, -3.7),
    "FI": Point(60.2, 24.9), "FR": Point(48.9, 2.4), "GB": Point(51.5, -0.1), "GH": Point(5.6, -0.2),
    "GR": Point(38.0, 23.7), "HK": Point(22.3, 114.2), "HR": Point(45.8, 16.0), "HU": Point(47.5, 19.0),
    "ID": Point(-6.2, 106.8), "IE": Point(53.3, -6.3), "IL": Point(32.1, 34.8), "IN": Point(19.1, 72.9),
    "IR": Point(35.7, 51.4), "IS": Point(64.1, -21.9), "IT": Point(41.9, 12.5), "JP": Point(35.7, 139.7),
    "KE": Point(-1.3, 36.8), "KR": Point(37.6, 127.0), "KZ": Point(43.2, 76.9), "LT": Point(54.7, 25.3),
    "LU": Point(49.6, 6.1), "LV": Point(56.9, 24.1), "MA": Point(33.6, -7.6), "MX": Point(19.4, -99.1),
    "MY": Point(3.1, 101.7), "NG": Point(6.5, 3.4), "NL": Point(52.4, 4.9), "NO": Point(59.9, 10.8),
    "NZ": Point(-36.8, 174.8), "PE": Point(-12.0, -77.0), "PH": Point(14.6, 121.0), "PK": Point(24.9, 67.0),
    "PL": Point(52.2, 21.0), "PT": Point(38.7, -9.1), "RO": Point(44.4, 26.1), "RS": Point(44.8, 20.5),
    "RU": Point(55.8, 37.6), "SA": Point(24.7, 46.7), "SE": Point(59.3, 18.1), "SG": Point(1.35, 103.8),
    "SI": Point(46.1, 14.5), "SK": Point(48.1, 17.1), "TH": Point(13.8, 100.5), "TR": Point(41.0, 29.0),
    "TW": Point(25.0, 121.6), "UA": Point(50.5, 30.5), "US": Point(39.8, -98.6), "VN": Point(10.8, 106.7),
    "ZA": Point(-26.2, 28.0),
}

_LAT_LON = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*$")


def distance_km(a: Point, b: Point) -> float:
    """Great-circle distance (haversine)."""
    lat1, lon1, lat2, lon2 = map(math.radians, (a.lat, a.lon, b.lat, b.lon))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def locate(location: str | Point) -> Point:
    """A country code ("DE", case-insensitive) or "lat,lon" text, or a Point; raises ValueError."""
    if isinstance(location, Point):
        return location
    match = _LAT_LON.match(location)
    if match:
        return Point(float(match.group(1)), float(match.group(2)))
    code = location.strip().upper()
    try:
        return COUNTRIES[code]
    except KeyError:
        raise ValueError(f"unknown location {location[:40]!r}: give an ISO country code this hub knows "
                         "or \"lat,lon\"") from None


def order_regions(location: str | Point, regions: Mapping[str, Point] | None = None) -> list[str]:
    """Region names, nearest to ``location`` first."""
    table = dict(DEFAULT_REGIONS if regions is None else regions)
    if not table:
        raise ValueError("no backup regions configured")
    here = locate(location)
    names = list(table)
    return sorted(names, key=lambda name: (distance_km(here, table[name]), names.index(name)))


def regions_from_config(table: Mapping[str, Mapping[str, float]]) -> dict[str, Point]:
    """``{"weur": {"lat": 50.1, "lon": 8.7}, …}`` (a TOML ``[regions.*]`` table) → points; raises ValueError."""
    points = {}
    for name, value in table.items():
        try:
            points[name] = Point(float(value["lat"]), float(value["lon"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"regions.{name}: needs numeric lat and lon ({exc})") from None
    return points
