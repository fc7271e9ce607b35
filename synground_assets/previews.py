"""Small previews for asset metadata: a contact sheet of triplets, a table of examples."""

from __future__ import annotations

import base64
import io
from typing import Sequence

import pandas as pd
from PIL import Image, ImageDraw, ImageFont

_PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
            (240, 50, 230), (128, 128, 0))

Labelled = tuple[str, tuple[float, float, float, float] | None]  # (phrase, box_xyxy or no box)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType
        return ImageFont.load_default()


def draw_triplets(
    image: Image.Image, labelled: Sequence[Labelled], tile: int = 256, mark_missing: bool = True
) -> Image.Image:
    """One tile: the image scaled to `tile` px wide, each box drawn, its phrase listed below
    (with "(no box)" where the phrase has none and `mark_missing`)."""
    scale = tile / image.width
    height = round(image.height * scale)
    font = _font(13)
    line = 16
    canvas = Image.new("RGB", (tile, height + line * max(1, len(labelled)) + 4), "white")
    canvas.paste(image.convert("RGB").resize((tile, height), Image.Resampling.BILINEAR))
    draw = ImageDraw.Draw(canvas)
    for index, (phrase, box) in enumerate(labelled):
        colour = _PALETTE[index % len(_PALETTE)]
        if box is not None:
            x0, y0, x1, y1 = (v * scale for v in box)
            draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=colour, width=2)
            draw.text((x0 + 2, y0 + 1), str(index + 1), fill=colour, font=font)
        label = f"{index + 1}. {phrase}" + (" (no box)" if box is None and mark_missing else "")
        draw.text((4, height + 2 + index * line), label[:40], fill=colour, font=font)
    return canvas


def contact_sheet(tiles: Sequence[Image.Image], columns: int = 4) -> Image.Image:
    if not tiles:
        return Image.new("RGB", (256, 32), "white")
    width = max(t.width for t in tiles)
    row_height = max(t.height for t in tiles)
    rows = (len(tiles) + columns - 1) // columns
    sheet = Image.new("RGB", (width * min(columns, len(tiles)), row_height * rows), (235, 235, 235))
    for index, tile in enumerate(tiles):
        sheet.paste(tile, ((index % columns) * width, (index // columns) * row_height))
    return sheet


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def image_markdown(image: Image.Image, alt: str = "preview") -> str:
    """Markdown with the PNG inlined, which the Dagster UI renders in the metadata panel."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png_bytes(image)).decode()})"


def markdown_table(frame: pd.DataFrame, max_rows: int = 5, max_chars: int = 120) -> str:
    """A few rows of a table as markdown, long cells shortened."""
    shown = frame.head(max_rows)

    def cell(value) -> str:
        text = str(value).replace("|", "\\|").replace("\n", " ")
        return text if len(text) <= max_chars else text[: max_chars - 1] + "…"

    header = "| " + " | ".join(map(str, shown.columns)) + " |"
    rule = "|" + "---|" * len(shown.columns)
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join([header, rule, *body])
