"""Semver ranges as ModelHub specs write them for runtime versions.

Supported: comparators ``>=1.2.3 >1.2 <=1 <2.0.0 =1.2.3 1.2.3``, caret ``^0.8.1``, tilde ``~0.8``, wildcards
``0.8.x``/``0.8.*``/``*``; comparators separated by spaces or commas are ANDed, ``||`` ORs alternatives.
Partial versions are padded with zeros (``>=0.7`` means ``>=0.7.0``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_VERSION = re.compile(r"^v?(\d+)(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?(?:[-+][0-9A-Za-z.-]+)?$")
_COMPARATOR = re.compile(r"^(>=|<=|>|<|=|\^|~)?\s*(.+)$")


class SemverError(ValueError):
    pass


Version = tuple[int, int, int]


def parse_version(text: str) -> Version:
    match = _VERSION.match(text.strip())
    if not match or any(part and not part.isdigit() for part in match.groups()):
        raise SemverError(f"invalid version {text!r}")
    major, minor, patch = (int(p) if p else 0 for p in match.groups())
    return major, minor, patch


@dataclass(frozen=True)
class _Bound:
    op: str
    version: Version

    def allows(self, v: Version) -> bool:
        return {
            ">=": v >= self.version,
            ">": v > self.version,
            "<=": v <= self.version,
            "<": v < self.version,
            "=": v == self.version,
        }[self.op]


def _expand(op: str, text: str) -> list[_Bound]:
    match = _VERSION.match(text)
    if not match:
        raise SemverError(f"invalid version {text!r}")
    raw = list(match.groups())
    wild = [p is None or p in ("x", "X", "*") for p in raw]
    nums = [0 if w else int(p) for p, w in zip(raw, wild, strict=False)]
    base: Version = (nums[0], nums[1], nums[2])
    if op == "^":
        if nums[0] > 0 or wild[1]:
            upper = (nums[0] + 1, 0, 0)
        elif nums[1] > 0 or wild[2]:
            upper = (0, nums[1] + 1, 0)
        else:
            upper = (0, 0, nums[2] + 1)
        return [_Bound(">=", base), _Bound("<", upper)]
    if op == "~":
        upper = (nums[0] + 1, 0, 0) if wild[1] else (nums[0], nums[1] + 1, 0)
        return [_Bound(">=", base), _Bound("<", upper)]
    if op in ("", "=") and (wild[1] or wild[2]):
        upper = (nums[0] + 1, 0, 0) if wild[1] else (nums[0], nums[1] + 1, 0)
        return [_Bound(">=", base), _Bound("<", upper)]
    return [_Bound(op or "=", base)]


@dataclass(frozen=True)
class Range:
    text: str
    alternatives: tuple[tuple[_Bound, ...], ...]

    def allows(self, version: str | Version) -> bool:
        v = parse_version(version) if isinstance(version, str) else version
        return any(all(b.allows(v) for b in alt) for alt in self.alternatives)

    def best(self, versions: list[str]) -> str | None:
        """The newest of ``versions`` inside the range, or None."""
        fitting = [v for v in versions if self.allows(v)]
        return max(fitting, key=parse_version) if fitting else None


def parse_range(text: str) -> Range:
    if not isinstance(text, str) or not text.strip():
        raise SemverError("empty version range")
    alternatives: list[tuple[_Bound, ...]] = []
    for alt in text.split("||"):
        alt = alt.strip()
        if alt in ("*", "x", "X", ""):
            if alt == "" and "||" in text:
                raise SemverError(f"invalid version range {text!r}: empty alternative")
            alternatives.append((_Bound(">=", (0, 0, 0)),))
            continue
        # Join operators to their version ("> = 1.2" is not allowed, ">= 1.2" is).
        tokens = re.sub(r"(>=|<=|>|<|=|\^|~)\s+", r"\1", alt.replace(",", " ")).split()
        bounds: list[_Bound] = []
        for token in tokens:
            match = _COMPARATOR.match(token)
            if not match:
                raise SemverError(f"invalid comparator {token!r} in {text!r}")
            try:
                bounds.extend(_expand(match.group(1) or "", match.group(2)))
            except SemverError:
                raise SemverError(f"invalid version range {text!r}: bad comparator {token!r}") from None
        alternatives.append(tuple(bounds))
    return Range(text=text, alternatives=tuple(alternatives))
