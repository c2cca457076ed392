"""Random identifiers in the shapes the real systems use, drawn in bulk from a numpy Generator."""
from __future__ import annotations

import numpy as np

ALNUM = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"))
HEX = np.array(list("0123456789abcdef"))
BASE58 = np.array(list("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"))


def _strings(rng: np.random.Generator, alphabet: np.ndarray, n: int, width: int) -> list[str]:
    chars = alphabet[rng.integers(0, len(alphabet), size=(n, width))]
    return chars.view(f"<U{width}").ravel().tolist() if n else []


def uuid4s(rng: np.random.Generator, n: int) -> list[str]:
    """Version-4 UUIDs (litellm_call_id, trace ids)."""
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    out = []
    for row in raw:
        h = row.tobytes().hex()
        out.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return out


def openai_ids(rng: np.random.Generator, n: int) -> list[str]:
    """OpenAI chat completion ids: 'chatcmpl-' + 29 alphanumerics."""
    return ["chatcmpl-" + s for s in _strings(rng, ALNUM, n, 29)]


def anthropic_ids(rng: np.random.Generator, n: int) -> list[str]:
    """Anthropic message ids: 'msg_01' + 22 base58 characters."""
    return ["msg_01" + s for s in _strings(rng, BASE58, n, 22)]


def hex_ids(rng: np.random.Generator, n: int, width: int = 32) -> list[str]:
    """nginx $request_id: 32 lowercase hex digits."""
    return _strings(rng, HEX, n, width)


def alnum(rng: np.random.Generator, n: int, width: int) -> list[str]:
    return _strings(rng, ALNUM, n, width)
