"""Deterministic tokenizer, text generator and embedding vectors.

The tokenizer is deliberately simple: one token per run of up to six word characters and one per punctuation
mark, whitespace free. Generated text is built from the same kind of pieces (" word", ".", ","), so re-tokenizing a
completion with `tokenize` gives back exactly `completion_tokens` tokens.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import struct

_TOKEN_RE = re.compile(r"\w{1,6}|[^\w\s]")

# Chat template in the ChatML style: "<|im_start|>{role}\n{content}<|im_end|>\n" per message, then the generation
# prompt "<|im_start|>assistant\n". Each marker, the role and each newline count as one token, like real templates.
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
MESSAGE_OVERHEAD_TOKENS = 5
GENERATION_PROMPT = (IM_START, "assistant", "\n")


def tokenize(text: str) -> list[str]:
    return _TOKEN_RE.findall(text)


def stable_hash(*parts: str | int) -> int:
    """A 64-bit hash that, unlike `hash()`, is the same in every process (replicas must agree on text)."""
    digest = hashlib.blake2b(digest_size=8)
    for part in parts:
        digest.update(str(part).encode("utf-8", "surrogatepass"))
        digest.update(b"\x1f")
    return int.from_bytes(digest.digest(), "little")


def _build_vocabulary(size: int = 1024) -> list[str]:
    rng = random.Random(20240229)
    consonants = "bcdfghjklmnprstvz"
    vowels = "aeiou"
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < size:
        syllables = rng.choice((1, 2, 2, 2, 3))
        word = "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(syllables))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


VOCABULARY = _build_vocabulary()
_SPACED = [" " + w for w in VOCABULARY]
_CAPITALISED = [w.capitalize() for w in VOCABULARY]
_SPACED_CAPITALISED = [" " + w for w in _CAPITALISED]
_VOCAB_BITS = 10  # len(VOCABULARY) == 1 << _VOCAB_BITS


def natural_length(seed: int, *, low: int = 16, high: int = 256) -> int:
    """How many tokens the 'model' wants to say before its end-of-sequence token, for this seed."""
    return low + seed % (high - low + 1)


def generate_pieces(seed: int, count: int) -> list[str]:
    """`count` token strings of pseudo-English: words, commas and full stops, fully determined by `seed`."""
    rng = random.Random(seed)
    bits = rng.getrandbits
    pieces: list[str] = []
    append = pieces.append
    sentence_left = 4 + bits(3)
    start_of_sentence = True
    first = True
    while len(pieces) < count:
        index = bits(_VOCAB_BITS)
        if start_of_sentence:
            append(_CAPITALISED[index] if first else _SPACED_CAPITALISED[index])
            start_of_sentence = False
        else:
            append(_SPACED[index])
        first = False
        sentence_left -= 1
        if sentence_left <= 0 and len(pieces) < count:
            append(".")
            start_of_sentence = True
            sentence_left = 4 + bits(3)
        elif bits(4) == 0 and len(pieces) < count:
            append(",")
    return pieces[:count]


def apply_stop(pieces: list[str], stops: list[str], include_stop: bool = False) -> tuple[list[str], str | None]:
    """Cut generation at the earliest stop string.

    Returns the emitted pieces (one per generated token, the last possibly partial or empty: the token that completed
    the stop string was generated and is billed, but the stop string itself is not returned) and the stop string
    that matched, or None.
    """
    if not stops:
        return pieces, None
    text = "".join(pieces)
    best_at = -1
    best_stop = None
    for stop in stops:
        at = text.find(stop)
        if at != -1 and (best_at == -1 or at < best_at or (at == best_at and len(stop) > len(best_stop or ""))):
            best_at, best_stop = at, stop
    if best_stop is None:
        return pieces, None
    end = best_at + len(best_stop)
    cut = end if include_stop else best_at
    emitted: list[str] = []
    offset = 0
    for piece in pieces:
        start = offset
        offset += len(piece)
        emitted.append(piece[: max(0, cut - start)] if start < cut else "")
        if offset >= end:
            break
    return emitted, best_stop


def embedding_vector(seed: int, dim: int) -> list[float]:
    """A unit-length float32-representable vector determined by `seed`."""
    rng = random.Random(seed)
    gauss = rng.gauss
    values = [gauss(0.0, 1.0) for _ in range(dim)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    packed = struct.pack(f"<{dim}f", *(v / norm for v in values))
    return list(struct.unpack(f"<{dim}f", packed))


def pack_float32(values: list[float]) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)
