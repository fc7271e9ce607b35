"""GradCAM overlays: the heat of a grounding model's map over the image, the true boxes and the
pointing-game point, marked hit or miss by the score's own protocol; and a figure of several."""

from __future__ import annotations

from typing import Sequence

from PIL import Image, ImageDraw

from synground_assets.grounding.data import Triplet
from synground_assets.grounding.gradcam import cross_attention_gradcam, upsample_cam
from synground_assets.grounding.model import GroundingModel
from synground_assets.grounding.pointing_game import PointingProtocol, as_protocol, heatmap_point, point_in_any_box
from synground_assets.records.previews import contact_sheet

OVERLAYS = 8  # overlays in a figure


def gradcam_overlay(model: GroundingModel, triplet: Triplet, resolution: int | None, protocol: PointingProtocol,
                    tile: int = 192) -> Image.Image:
    """The image with the model's GradCAM heat laid over it, the true box(es) in green and the
    pointing-game point as a cross (white when it hits, red when it misses), point and hit by the
    score's own protocol."""
    image = triplet.load_image()
    inputs = model.preprocess([image], [triplet.phrase], resolution)
    cam = cross_attention_gradcam(model, inputs, combine=protocol.combine).cam[0].float().cpu()  # (rows, cols)
    heat = upsample_cam(cam[None], (image.height, image.width), protocol.upsample)[0]  # (H, W)
    heat = (heat / heat.max().clamp(min=1e-12)).clamp(0, 1)  # the amc map is not normalised
    red = Image.fromarray((heat.numpy() * 255).astype("uint8")).convert("L")
    overlay = Image.composite(Image.new("RGB", image.size, (255, 0, 0)), image, red.point(lambda v: int(v * 0.6)))
    x, y = heatmap_point(cam, image.size, protocol.upsample)
    hit = point_in_any_box((x, y), triplet.boxes_xyxy, protocol.hit)
    scale = tile / image.width
    canvas = Image.new("RGB", (tile, round(image.height * scale) + 18), "white")
    canvas.paste(overlay.resize((tile, round(image.height * scale))))
    draw = ImageDraw.Draw(canvas)
    for x0, y0, x1, y1 in triplet.boxes_xyxy:
        draw.rectangle((x0 * scale, y0 * scale, x1 * scale - 1, y1 * scale - 1), outline=(0, 200, 0), width=2)
    px, py = x * scale, y * scale
    colour = (255, 255, 255) if hit else (255, 0, 0)
    draw.line((px - 6, py, px + 6, py), fill=colour, width=2)
    draw.line((px, py - 6, px, py + 6), fill=colour, width=2)
    draw.text((3, canvas.height - 16), triplet.phrase[:34], fill=(0, 0, 0))
    return canvas


def gradcam_figure(model: GroundingModel, triplets: Sequence[Triplet], resolution: int | None,
                   protocol: str | PointingProtocol = "pixel-centre") -> Image.Image:
    """Overlays of the first few triplets, four to a row (the model is put in eval mode meanwhile)."""
    was_training = model.training
    model.eval()
    try:
        overlays = [gradcam_overlay(model, t, resolution, as_protocol(protocol)) for t in triplets[:OVERLAYS]]
        return contact_sheet(overlays, columns=4)
    finally:
        model.train(was_training)
