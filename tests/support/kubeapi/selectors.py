"""Label and field selectors, as list requests filter by them."""

from __future__ import annotations

import re


def _split_top(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if current:
        parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def label_match(selector: str, labels: dict) -> bool:
    for term in _split_top(selector or ""):
        found = re.match(r"^([\w./-]+)\s+(in|notin)\s+\((.*)\)$", term)
        if found:
            key, op, values = found.group(1), found.group(2), {v.strip() for v in found.group(3).split(",")}
            if (op == "in") != (labels.get(key) in values):
                return False
        elif "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _dig(obj: dict, dotted: str):
    current = obj
    for part in dotted.split("."):
        if not isinstance(current, dict):
            return ""
        current = current.get(part)
    return "" if current is None else str(current)


def field_match(selector: str, obj: dict) -> bool:
    for term in _split_top(selector or ""):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if _dig(obj, key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if _dig(obj, key.strip()) != value.strip():
                return False
    return True
