import pytest

from catalog.semver import SemverError, parse_range


@pytest.mark.parametrize(
    "spec, allowed, refused",
    [
        (">=0.7.1", ["0.7.1", "0.8.5", "1.0.0"], ["0.7.0", "0.6.9"]),
        (">=0.7 <0.9", ["0.7.0", "0.8.5"], ["0.9.0", "0.6.6"]),
        (">=0.7.1, <0.9.0", ["0.8.0"], ["0.9.0"]),
        ("^0.8.1", ["0.8.1", "0.8.9"], ["0.9.0", "0.8.0"]),
        ("^1.2", ["1.2.0", "1.9.9"], ["2.0.0", "1.1.9"]),
        ("~0.8", ["0.8.0", "0.8.7"], ["0.9.0"]),
        ("0.8.x", ["0.8.0", "0.8.5"], ["0.9.0", "0.7.9"]),
        ("0.4.6 || >=0.5", ["0.4.6", "0.5.0"], ["0.4.7"]),
        ("*", ["0.0.1", "9.9.9"], []),
        ("=0.6.6", ["0.6.6"], ["0.6.7"]),
    ],
)
def test_ranges(spec, allowed, refused):
    r = parse_range(spec)
    assert all(r.allows(v) for v in allowed)
    assert not any(r.allows(v) for v in refused)


def test_best_picks_newest_inside_range():
    assert parse_range(">=0.7.1 <0.10").best(["0.6.6", "0.7.3", "0.8.5", "0.9.2", "0.10.2"]) == "0.9.2"
    assert parse_range(">=1.0").best(["0.8.5"]) is None


@pytest.mark.parametrize("bad", ["", ">=", ">=abc", "=>0.7", ">=0.7.1.2", "0.7 ||", "latest"])
def test_invalid_ranges_raise(bad):
    with pytest.raises(SemverError):
        parse_range(bad)
