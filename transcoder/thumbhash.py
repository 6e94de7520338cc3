"""ThumbHash (Evan Wallace's compact image placeholder): encoder and decoders.

A direct port of the reference ``rgbaToThumbHash``; input at most 100x100. We
feed it at most 32x32: the hash keeps only the lowest frequencies, so more
pixels cost time and add nothing.
"""

from __future__ import annotations

import math


def _encode_channel(
    channel: list[float], w: int, h: int, nx: int, ny: int
) -> tuple[float, list[float], float]:
    dc = 0.0
    ac: list[float] = []
    scale = 0.0
    for cy in range(ny):
        cx = 0
        while cx * ny < nx * (ny - cy):
            fx = [math.cos(math.pi / w * cx * (x + 0.5)) for x in range(w)]
            f = 0.0
            for y in range(h):
                fy = math.cos(math.pi / h * cy * (y + 0.5))
                row = y * w
                f += fy * sum(channel[row + x] * fx[x] for x in range(w))
            f /= w * h
            if cx or cy:
                ac.append(f)
                scale = max(scale, abs(f))
            else:
                dc = f
            cx += 1
    if scale:
        ac = [0.5 + 0.5 / scale * v for v in ac]
    return dc, ac, scale


def rgba_to_thumbhash(w: int, h: int, rgba: bytes) -> bytes:
    if w > 100 or h > 100:
        raise ValueError(f"{w}x{h} does not fit in 100x100")
    n = w * h
    avg_r = avg_g = avg_b = avg_a = 0.0
    for i in range(n):
        alpha = rgba[4 * i + 3] / 255
        avg_r += alpha / 255 * rgba[4 * i]
        avg_g += alpha / 255 * rgba[4 * i + 1]
        avg_b += alpha / 255 * rgba[4 * i + 2]
        avg_a += alpha
    if avg_a:
        avg_r /= avg_a
        avg_g /= avg_a
        avg_b /= avg_a
    has_alpha = avg_a < n
    l_limit = 5 if has_alpha else 7
    lx = max(1, round(l_limit * w / max(w, h)))
    ly = max(1, round(l_limit * h / max(w, h)))
    lum: list[float] = []
    p: list[float] = []
    q: list[float] = []
    a: list[float] = []
    for i in range(n):
        alpha = rgba[4 * i + 3] / 255
        r = avg_r * (1 - alpha) + alpha / 255 * rgba[4 * i]
        g = avg_g * (1 - alpha) + alpha / 255 * rgba[4 * i + 1]
        b = avg_b * (1 - alpha) + alpha / 255 * rgba[4 * i + 2]
        lum.append((r + g + b) / 3)
        p.append((r + g) / 2 - b)
        q.append(r - g)
        a.append(alpha)
    l_dc, l_ac, l_scale = _encode_channel(lum, w, h, max(3, lx), max(3, ly))
    p_dc, p_ac, p_scale = _encode_channel(p, w, h, 3, 3)
    q_dc, q_ac, q_scale = _encode_channel(q, w, h, 3, 3)
    is_landscape = w > h
    header24 = (
        round(63 * l_dc)
        | (round(31.5 + 31.5 * p_dc) << 6)
        | (round(31.5 + 31.5 * q_dc) << 12)
        | (round(31 * l_scale) << 18)
        | (int(has_alpha) << 23)
    )
    header16 = (
        (ly if is_landscape else lx)
        | (round(63 * p_scale) << 3)
        | (round(63 * q_scale) << 9)
        | (int(is_landscape) << 15)
    )
    out = [header24 & 255, (header24 >> 8) & 255, header24 >> 16, header16 & 255, header16 >> 8]
    channels = [l_ac, p_ac, q_ac]
    if has_alpha:
        a_dc, a_ac, a_scale = _encode_channel(a, w, h, 5, 5)
        out.append(round(15 * a_dc) | (round(15 * a_scale) << 4))
        channels.append(a_ac)
    ac_start = len(out)
    index = 0
    for ac in channels:
        for f in ac:
            pos = ac_start + (index >> 1)
            while len(out) <= pos:
                out.append(0)
            out[pos] |= round(15 * f) << ((index & 1) << 2)
            index += 1
    return bytes(out)


def thumbhash_average_rgba(hash_bytes: bytes) -> tuple[float, float, float, float]:
    """The average colour a ThumbHash encodes (reference ``thumbHashToAverageRGBA``)."""
    header = hash_bytes[0] | (hash_bytes[1] << 8) | (hash_bytes[2] << 16)
    l_dc = (header & 63) / 63
    p_dc = ((header >> 6) & 63) / 31.5 - 1
    q_dc = ((header >> 12) & 63) / 31.5 - 1
    has_alpha = bool(header >> 23)
    a = (hash_bytes[5] & 15) / 15 if has_alpha else 1.0
    b = l_dc - 2 / 3 * p_dc
    r = (3 * l_dc - b + q_dc) / 2
    g = r - q_dc
    return (
        max(0.0, min(1.0, r)),
        max(0.0, min(1.0, g)),
        max(0.0, min(1.0, b)),
        a,
    )


def thumbhash_aspect_ratio(hash_bytes: bytes) -> float:
    """Width over height, as far as the hash keeps it (reference
    ``thumbHashToApproximateAspectRatio``)."""
    header = hash_bytes[3]
    has_alpha = bool(hash_bytes[2] & 0x80)
    is_landscape = bool(hash_bytes[4] & 0x80)
    lx = (5 if has_alpha else 7) if is_landscape else header & 7
    ly = header & 7 if is_landscape else (5 if has_alpha else 7)
    return lx / ly


def _decode_ac(
    hash_bytes: bytes, start: int, index: int, nx: int, ny: int, scale: float
) -> tuple[list[float], int]:
    ac: list[float] = []
    for cy in range(ny):
        cx = 0 if cy else 1
        while cx * ny < nx * (ny - cy):
            nibble = (hash_bytes[start + (index >> 1)] >> ((index & 1) << 2)) & 15
            ac.append((nibble / 7.5 - 1) * scale)
            index += 1
            cx += 1
    return ac, index


def thumbhash_to_rgba(hash_bytes: bytes) -> tuple[int, int, bytes]:
    """Decode to at most 32x32 RGBA pixels (reference ``thumbHashToRGBA``).

    Returns ``(width, height, rgba)``. Clients decode the same way in JS; this
    port lets tests check that a hash really looks like its image.
    """
    header24 = hash_bytes[0] | (hash_bytes[1] << 8) | (hash_bytes[2] << 16)
    header16 = hash_bytes[3] | (hash_bytes[4] << 8)
    l_dc = (header24 & 63) / 63
    p_dc = ((header24 >> 6) & 63) / 31.5 - 1
    q_dc = ((header24 >> 12) & 63) / 31.5 - 1
    l_scale = ((header24 >> 18) & 31) / 31
    has_alpha = bool(header24 >> 23)
    p_scale = ((header16 >> 3) & 63) / 63
    q_scale = ((header16 >> 9) & 63) / 63
    is_landscape = bool(header16 >> 15)
    lx = max(3, (5 if has_alpha else 7) if is_landscape else header16 & 7)
    ly = max(3, header16 & 7 if is_landscape else (5 if has_alpha else 7))
    a_dc = (hash_bytes[5] & 15) / 15 if has_alpha else 1.0
    a_scale = (hash_bytes[5] >> 4) / 15

    # Saturation is boosted by 1.25 to make up for quantization, as in the reference.
    start = 6 if has_alpha else 5
    l_ac, index = _decode_ac(hash_bytes, start, 0, lx, ly, l_scale)
    p_ac, index = _decode_ac(hash_bytes, start, index, 3, 3, p_scale * 1.25)
    q_ac, index = _decode_ac(hash_bytes, start, index, 3, 3, q_scale * 1.25)
    a_ac = _decode_ac(hash_bytes, start, index, 5, 5, a_scale)[0] if has_alpha else []

    ratio = thumbhash_aspect_ratio(hash_bytes)
    w = round(32 if ratio > 1 else 32 * ratio)
    h = round(32 / ratio if ratio > 1 else 32)
    out = bytearray(w * h * 4)
    nfx = max(lx, 5 if has_alpha else 3)
    nfy = max(ly, 5 if has_alpha else 3)
    i = 0
    for y in range(h):
        fy = [math.cos(math.pi / h * (y + 0.5) * cy) for cy in range(nfy)]
        for x in range(w):
            fx = [math.cos(math.pi / w * (x + 0.5) * cx) for cx in range(nfx)]
            lum, p, q, a = l_dc, p_dc, q_dc, a_dc
            j = 0
            for cy in range(ly):
                cx = 0 if cy else 1
                fy2 = fy[cy] * 2
                while cx * ly < lx * (ly - cy):
                    lum += l_ac[j] * fx[cx] * fy2
                    cx += 1
                    j += 1
            j = 0
            for cy in range(3):
                cx = 0 if cy else 1
                fy2 = fy[cy] * 2
                while cx < 3 - cy:
                    f = fx[cx] * fy2
                    p += p_ac[j] * f
                    q += q_ac[j] * f
                    cx += 1
                    j += 1
            if has_alpha:
                j = 0
                for cy in range(5):
                    cx = 0 if cy else 1
                    fy2 = fy[cy] * 2
                    while cx < 5 - cy:
                        a += a_ac[j] * fx[cx] * fy2
                        cx += 1
                        j += 1
            b = lum - 2 / 3 * p
            r = (3 * lum - b + q) / 2
            g = r - q
            out[i] = int(max(0.0, 255 * min(1.0, r)))
            out[i + 1] = int(max(0.0, 255 * min(1.0, g)))
            out[i + 2] = int(max(0.0, 255 * min(1.0, b)))
            out[i + 3] = int(max(0.0, 255 * min(1.0, a)))
            i += 4
    return w, h, bytes(out)
