"""Backup regions ordered by distance from a user's location."""

from __future__ import annotations

import pytest

from hub_client.regions import DEFAULT_REGIONS, Point, distance_km, locate, order_regions, regions_from_config


def test_distance_of_known_city_pairs() -> None:
    # London–Paris is about 344 km, New York–Los Angeles about 3,940 km.
    assert distance_km(Point(51.5074, -0.1278), Point(48.8566, 2.3522)) == pytest.approx(344, abs=5)
    assert distance_km(Point(40.7128, -74.0060), Point(34.0522, -118.2437)) == pytest.approx(3940, abs=30)
    assert distance_km(Point(10, 20), Point(10, 20)) == 0


@pytest.mark.parametrize("location, nearest", [
    ("DE", ["weur", "eeur"]),
    ("pl", ["eeur", "weur"]),
    ("GB", ["weur", "eeur"]),
    ("US", ["enam", "wnam"]),
    ("JP", ["apac", "oc"]),
    ("AU", ["oc", "apac"]),
    ("BR", ["enam", "weur"]),
    ("37.77,-122.42", ["wnam", "enam"]),     # San Francisco as lat,lon
    (" -41.3 , 174.8 ", ["oc", "apac"]),     # Wellington, with spaces
])
def test_region_order_for_known_locations(location, nearest) -> None:
    order = order_regions(location)
    assert sorted(order) == sorted(DEFAULT_REGIONS)
    assert order[:2] == nearest


def test_configured_regions_and_ties_keep_table_order() -> None:
    table = regions_from_config({"b": {"lat": 0, "lon": 10}, "a": {"lat": 0, "lon": -10}, "far": {"lat": 60, "lon": 0}})
    assert order_regions("0,0", table) == ["b", "a", "far"]
    assert order_regions(Point(0, -9), table) == ["a", "b", "far"]


@pytest.mark.parametrize("bad", ["XX", "", "Germany", "91,0", "0,181"])
def test_unknown_or_impossible_locations_are_refused(bad) -> None:
    with pytest.raises(ValueError):
        locate(bad)


def test_bad_region_tables_are_refused() -> None:
    with pytest.raises(ValueError, match="regions.x"):
        regions_from_config({"x": {"lat": 1}})
    with pytest.raises(ValueError, match="no backup regions"):
        order_regions("DE", {})
