"""A Tox ID as a QR code: the module matrix, drawn as terminal text or written as a PNG.

What the code holds is the Tox URI `tox:` + the 76 hex digits (upper case), as the Single Tox
Standard's URI scheme has it and as qTox puts in its own profile QR code; aTox strips `tox:` from
what it scans (and takes a bare ID too), so phones read it as well.
"""

from __future__ import annotations

import io
from pathlib import Path

import png
import qrcode
import qrcode.constants

from ..files import replace_file

Matrix = list[list[bool]]  # True = dark module, rows top to bottom, no quiet zone

TOX_URI_SCHEME = "tox:"
# ISO/IEC 18004 asks for a light margin of 4 modules; without it phone cameras miss the code,
# above all on a dark terminal, where the margin is the only light around it.
QUIET_ZONE = 4
PNG_SCALE = 8  # pixels per module: 41 modules (version 4 + margins) make a 328-pixel image

# Half blocks: one character is two modules, the upper and the lower. The ink (foreground) draws
# the LIGHT modules and the background shows the dark ones, so the code comes out dark-on-light
# on the usual light-on-dark terminal; on a terminal, COLOURS fixes both colours (white ink on
# black), so a light-themed terminal shows it the right way round too.
_BLOCKS = {(True, True): "\u2588", (True, False): "\u2580", (False, True): "\u2584", (False, False): " "}
COLOURS = "\x1b[97;40m"  # bright white foreground, black background
RESET = "\x1b[0m"


def tox_uri(address: bytes) -> str:
    """The text a Tox client scans: `tox:` and the full Tox ID (38 bytes) in upper-case hex."""
    if len(address) != 38:
        raise ValueError(f"a Tox ID has 38 bytes, not {len(address)}")
    return TOX_URI_SCHEME + address.hex().upper()


def matrix(text: str) -> Matrix:
    """The QR code's modules for text, smallest version that holds it, error correction M
    (15 %: enough for a photo of a screen, and the code stays version 4 for a Tox URI)."""
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=0)
    # optimize: the hex digits and ':' go in alphanumeric mode, only "tox" in byte mode.
    code.add_data(text, optimize=20)
    code.make(fit=True)
    return [[bool(module) for module in row] for row in code.get_matrix()]


def with_quiet_zone(modules: Matrix, border: int = QUIET_ZONE) -> Matrix:
    width = len(modules[0]) + 2 * border
    blank = [[False] * width for _ in range(border)]
    return blank + [[False] * border + row + [False] * border for row in modules] + [row[:] for row in blank]


def to_text(modules: Matrix, colour: bool = False) -> str:
    """The code as lines of half blocks, quiet zone included, each line ending in a newline."""
    light = [[not dark for dark in row] for row in with_quiet_zone(modules)]
    if len(light) % 2:
        light.append([True] * len(light[0]))  # the last line's lower half: more margin
    lines = []
    for upper, lower in zip(light[0::2], light[1::2], strict=False):
        line = "".join(_BLOCKS[pair] for pair in zip(upper, lower, strict=False))
        lines.append(f"{COLOURS}{line}{RESET}" if colour else line)
    return "".join(line + "\n" for line in lines)


def to_png(modules: Matrix, scale: int = PNG_SCALE) -> bytes:
    """The code as a 1-bit greyscale PNG (black on white), quiet zone included."""
    rows = []
    for row in with_quiet_zone(modules):
        pixels = [value for dark in row for value in [0 if dark else 1] * scale]
        rows.extend([pixels] * scale)
    out = io.BytesIO()
    png.Writer(len(rows[0]), len(rows), greyscale=True, bitdepth=1).write(out, rows)
    return out.getvalue()


def write_png(path: Path, modules: Matrix, scale: int = PNG_SCALE) -> None:
    """Write the PNG to path atomically; an OSError names path."""
    replace_file(path, to_png(modules, scale))
