"""A matrix/TRC ICC v2 profile built from its primaries, for tests.

Adobe RGB (1998) ships with no libvips build here and is not free to
redistribute as a file, so the tests build an equivalent profile from the
published primaries (D50-adapted) and gamma 563/256.
"""

from __future__ import annotations

import struct

ADOBE_RGB_PRIMARIES = {
    b"rXYZ": (0.60974, 0.31111, 0.01947),
    b"gXYZ": (0.20528, 0.62567, 0.06087),
    b"bXYZ": (0.14919, 0.06322, 0.74457),
}
_D50 = (0.9642, 1.0, 0.8249)
_ADOBE_GAMMA_U8F8 = 563  # 2.19921875


def _s15f16(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(values: tuple[float, float, float]) -> bytes:
    return b"XYZ \0\0\0\0" + b"".join(_s15f16(v) for v in values)


def _desc(text: str) -> bytes:
    ascii_text = text.encode() + b"\0"
    body = b"desc\0\0\0\0" + struct.pack(">I", len(ascii_text)) + ascii_text
    # Empty Unicode and ScriptCode parts, as textDescriptionType requires.
    body += struct.pack(">II", 0, 0) + struct.pack(">HB", 0, 0) + b"\0" * 67
    return body


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def matrix_trc_profile(
    description: str,
    primaries: dict[bytes, tuple[float, float, float]],
    gamma_u8f8: int,
) -> bytes:
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, gamma_u8f8)
    tags: list[tuple[bytes, bytes]] = [
        (b"desc", _desc(description)),
        (b"wtpt", _xyz(_D50)),
        *((sig, _xyz(xyz)) for sig, xyz in primaries.items()),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    table_size = 4 + 12 * len(tags)
    offset = 128 + table_size
    table = struct.pack(">I", len(tags))
    data = b""
    for sig, body in tags:
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += _pad(body)
    size = 128 + table_size + len(data)
    header = (
        struct.pack(">I", size)
        + b"lcms"
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + struct.pack(">6H", 2024, 1, 1, 0, 0, 0)
        + b"acsp"
        + b"APPL"
        + b"\0" * 4  # flags
        + b"\0" * 8  # manufacturer, model
        + b"\0" * 8  # attributes
        + struct.pack(">I", 0)  # perceptual intent
        + b"".join(_s15f16(v) for v in _D50)
        + b"\0" * 4  # creator
    )
    header += b"\0" * (128 - len(header))
    return header + table + data


def adobe_rgb_profile() -> bytes:
    return matrix_trc_profile("Adobe RGB (1998) compatible", ADOBE_RGB_PRIMARIES, _ADOBE_GAMMA_U8F8)
