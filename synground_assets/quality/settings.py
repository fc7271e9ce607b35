"""The recipe's `quality:` block: which filters run, with which thresholds (all have defaults).

    quality:
      min_box_score: 0.0           # confidence floor (0: keep what the detector's own thresholds kept)
      min_box_area: 0.0005         # box area / image area below this: too small to teach anything
      max_box_area: 0.95           # ... above this: the box is the whole image
      cross_phrase_nms_iou: 0.8    # two phrases of one image on one box: keep the better-scoring pair
      max_boxes_per_phrase: 3      # keep a phrase's best boxes only
      min_image_std: 2.0           # pixel std (0-255) below this: a degenerate, near-constant image
      regenerate_attempts: 1       # flagged or degenerate image: retry with the next seed(s)
      image_dedup_distance: 4      # perceptual-hash Hamming distance <= this: near-duplicate image
      dedup_descriptions: true     # identical descriptions (case, spacing, punctuation ignored)
      drop_truncated_text: true    # a describer output cut off at max_new_tokens mid-sentence is dropped
      agreement: null              # or {model:, min_itm_probability:, min_box_mass:, min_box_mass_lift:,
                                   #     require_peak_in_box:, batch_size:}
      ensemble: null               # several detectors (`roles.detector` a list): {min_agreeing: 2, iou: 0.5}
      verify: null                 # crop verification: {judge: vlm|itm, model:, question:, margin: 0.2,
                                   #     context: 0.1, batch_size: 16, device: auto, dtype: float32}

A number filter is off at its neutral value (0, 1 or null); `agreement` and `verify` are off unless
given; `ensemble` applies (with its defaults) whenever a recipe names several detectors.
See docs/box-verification.md for when to use which.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


class QualitySettingsError(ValueError):
    """A `quality:` block that cannot be used; the message names the field and the expected value."""


@dataclass(frozen=True)
class AgreementSettings:
    model: str | None = None  # a GroundingModel (hub id, folder, tiny:<name>); None: the recipe's grounding_model
    min_itm_probability: float = 0.5  # the model's P(match) of the (image, phrase) pair
    min_box_mass: float = 0.0  # share of the phrase's GradCAM mass inside the box (0: off)
    # That share over the box's share of the image: 1.0 = no more than a flat map gives a box of its
    # size, i.e. the model sees the phrase no more in the box than anywhere else.
    min_box_mass_lift: float = 1.0
    # The pointing game on the training box: the map's peak must fall inside it (stricter).
    require_peak_in_box: bool = False
    batch_size: int = 32


ENSEMBLE_FUSIONS = ("wbf",)
VERIFY_JUDGES = ("vlm", "itm")
# ROVI (ICCV 2025), vlm_cross_checking/cross_checking.py:154 (CihangPeng/ROVI@3615aa1): the question asked of each crop.
ROVI_QUESTION = "Is this an image of {phrase}? Answer yes or no."
ROVI_MARGIN = 0.2  # ibid. :213, :218: yes only when P(yes) >= P(no) + 0.2, against the VLM's yes-bias


@dataclass(frozen=True)
class EnsembleSettings:
    """Several detectors on one phrase: their boxes fused per phrase (weighted box fusion,
    quality/ensemble.py), a fused box kept only when `min_agreeing` detectors proposed a box
    overlapping it with IoU >= `iou`."""

    min_agreeing: int = 2
    iou: float = 0.5  # the usual "same object" overlap (COCO's AP50, ZFTurbo WBF's default 0.55 is close)
    fusion: str = "wbf"


@dataclass(frozen=True)
class VerifySettings:
    """Crop verification: a judge looks at each kept box's crop (enlarged by `context` of the box's
    side on every side, clipped to the image) and says whether it shows the phrase.

    judge `vlm`: an image-text-to-text chat model (`model`), asked `question`; P(yes) and P(no) are
    the next-token probabilities of the yes and no words; kept when P(yes) >= P(no) + margin (ROVI).
    judge `itm`: the grounding model's ITM head on the crop (`model`, else the recipe's
    grounding_model): P(yes) = P(match), P(no) = 1 - P(match), the same rule."""

    judge: str = "vlm"
    model: str | None = None
    question: str = ROVI_QUESTION
    margin: float = ROVI_MARGIN
    context: float = 0.1
    batch_size: int = 16
    device: str = "auto"
    dtype: str = "float32"


@dataclass(frozen=True)
class QualitySettings:
    min_box_score: float = 0.0
    min_box_area: float = 0.0005
    max_box_area: float = 0.95
    cross_phrase_nms_iou: float | None = 0.8
    max_boxes_per_phrase: int | None = 3
    min_image_std: float = 2.0
    regenerate_attempts: int = 1
    image_dedup_distance: int | None = 4
    dedup_descriptions: bool = True
    drop_truncated_text: bool = True
    agreement: AgreementSettings | None = None
    ensemble: EnsembleSettings | None = None
    verify: VerifySettings | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, where: str = "quality") -> QualitySettings:
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise QualitySettingsError(f"{where}: unknown field(s) {', '.join(unknown)}; expected some of "
                                       f"{', '.join(sorted(known))}")
        agreement = data.pop("agreement", None)
        ensemble = data.pop("ensemble", None)
        verify = data.pop("verify", None)
        for name in ("min_box_score", "min_box_area", "max_box_area", "cross_phrase_nms_iou"):
            _check_fraction(data, name, where)
        for name in ("max_boxes_per_phrase", "regenerate_attempts", "image_dedup_distance"):
            _check_count(data, name, where, allow_none=name != "regenerate_attempts")
        if "min_image_std" in data and not _number(data["min_image_std"], 0, 255):
            raise QualitySettingsError(f"{where}.min_image_std: expected a number in [0, 255], "
                                       f"got {data['min_image_std']!r}")
        for name in ("dedup_descriptions", "drop_truncated_text"):
            if name in data and not isinstance(data[name], bool):
                raise QualitySettingsError(f"{where}.{name}: expected true or false, got {data[name]!r}")
        settings = cls(**data, agreement=_agreement(agreement, f"{where}.agreement") if agreement is not None else None,
                       ensemble=_ensemble(ensemble, f"{where}.ensemble") if ensemble is not None else None,
                       verify=_verify(verify, f"{where}.verify") if verify is not None else None)
        if settings.min_box_area > settings.max_box_area:
            raise QualitySettingsError(f"{where}: min_box_area {settings.min_box_area} is above max_box_area "
                                       f"{settings.max_box_area}")
        return settings


def _number(value: Any, low: float, high: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high


def _check_fraction(data: dict, name: str, where: str) -> None:
    if name in data and not (data[name] is None and name == "cross_phrase_nms_iou") and not _number(data[name], 0, 1):
        raise QualitySettingsError(f"{where}.{name}: expected a number between 0 and 1, got {data[name]!r}")


def _check_count(data: dict, name: str, where: str, allow_none: bool) -> None:
    value = data.get(name, 0)
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise QualitySettingsError(f"{where}.{name}: expected an integer >= 0{' or null' if allow_none else ''}, "
                                   f"got {value!r}")


def _agreement(data: Any, where: str) -> AgreementSettings:
    if data is True:
        return AgreementSettings()
    if not isinstance(data, dict):
        raise QualitySettingsError(f"{where}: expected a mapping (or true for the defaults), got {data!r}")
    known = {f.name for f in fields(AgreementSettings)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise QualitySettingsError(f"{where}: unknown field(s) {', '.join(unknown)}; expected some of "
                                   f"{', '.join(sorted(known))}")
    for name in ("min_itm_probability", "min_box_mass"):
        _check_fraction(data, name, where)
    if "batch_size" in data and (isinstance(data["batch_size"], bool) or not isinstance(data["batch_size"], int)
                                 or data["batch_size"] < 1):
        raise QualitySettingsError(f"{where}.batch_size: expected an integer >= 1, got {data['batch_size']!r}")
    if "min_box_mass_lift" in data and not _number(data["min_box_mass_lift"], 0, 1e6):
        raise QualitySettingsError(f"{where}.min_box_mass_lift: expected a number >= 0, "
                                   f"got {data['min_box_mass_lift']!r}")
    if "require_peak_in_box" in data and not isinstance(data["require_peak_in_box"], bool):
        raise QualitySettingsError(f"{where}.require_peak_in_box: expected true or false, "
                                   f"got {data['require_peak_in_box']!r}")
    if data.get("model") is not None and not isinstance(data["model"], str):
        raise QualitySettingsError(f"{where}.model: expected a string, got {data['model']!r}")
    return AgreementSettings(**data)


def _block(data: Any, where: str, kind: type) -> dict:
    if data is True:
        return {}
    if not isinstance(data, dict):
        raise QualitySettingsError(f"{where}: expected a mapping (or true for the defaults), got {data!r}")
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise QualitySettingsError(f"{where}: unknown field(s) {', '.join(unknown)}; expected some of "
                                   f"{', '.join(sorted(known))}")
    return dict(data)


def _positive_int(data: dict, name: str, where: str) -> None:
    if name in data and (isinstance(data[name], bool) or not isinstance(data[name], int) or data[name] < 1):
        raise QualitySettingsError(f"{where}.{name}: expected an integer >= 1, got {data[name]!r}")


def _one_of(data: dict, name: str, where: str, choices: tuple[str, ...]) -> None:
    if name in data and data[name] not in choices:
        raise QualitySettingsError(f"{where}.{name}: expected one of {', '.join(choices)}, got {data[name]!r}")


def _ensemble(data: Any, where: str) -> EnsembleSettings:
    data = _block(data, where, EnsembleSettings)
    _positive_int(data, "min_agreeing", where)
    if "iou" in data and not (_number(data["iou"], 0, 1) and data["iou"] > 0):
        raise QualitySettingsError(f"{where}.iou: expected a number in (0, 1], got {data['iou']!r}")
    _one_of(data, "fusion", where, ENSEMBLE_FUSIONS)
    return EnsembleSettings(**data)


def _verify(data: Any, where: str) -> VerifySettings:
    data = _block(data, where, VerifySettings)
    _one_of(data, "judge", where, VERIFY_JUDGES)
    _one_of(data, "device", where, ("cpu", "cuda", "auto"))
    _one_of(data, "dtype", where, ("float32", "float16", "bfloat16"))
    _positive_int(data, "batch_size", where)
    # A negative margin is allowed: a judge biased towards "no" (an ITM head trained on hard negatives).
    if "margin" in data and not _number(data["margin"], -1, 1):
        raise QualitySettingsError(f"{where}.margin: expected a number in [-1, 1], got {data['margin']!r}")
    if "context" in data and not _number(data["context"], 0, 10):
        raise QualitySettingsError(f"{where}.context: expected a number >= 0 (a share of the box side), "
                                   f"got {data['context']!r}")
    for name in ("model", "question"):
        if data.get(name) is not None and not isinstance(data[name], str):
            raise QualitySettingsError(f"{where}.{name}: expected a string, got {data[name]!r}")
    if "{phrase}" not in data.get("question", "{phrase}"):
        raise QualitySettingsError(f"{where}.question: expected a question with {{phrase}} in it, "
                                   f"got {data['question']!r}")
    settings = VerifySettings(**data)
    if settings.judge == "vlm" and not settings.model:
        raise QualitySettingsError(f"{where}.model: the vlm judge needs a model (an image-text-to-text chat model: "
                                   "a hub id, a folder or tiny:<name>); or use judge: itm")
    return settings
