"""Crop verification: the crop window (box + context, clipped at the image edge), ROVI's margin rule,
removal rows with the measured probabilities, and real tiny judges batched == one by one."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from synground_assets.config.recipes import RoleSpec
from synground_assets.quality.settings import ROVI_MARGIN, QualitySettings, QualitySettingsError, VerifySettings
from synground_assets.quality.verify import VERDICT_COLUMNS, crop_box, judge_batched, verify_filter

ITEM = "shapes:00000:0000"


def test_the_crop_is_the_box_with_its_context_margin():
    assert crop_box((20, 20, 40, 30), (100, 100), 0.1) == (18, 19, 42, 31)
    assert crop_box((20.5, 20.5, 39.5, 29.5), (100, 100), 0.0) == (20, 20, 40, 30)  # whole pixels, outwards


def test_the_crop_is_clipped_at_the_image_edge():
    assert crop_box((0, 0, 10, 10), (50, 40), 0.5) == (0, 0, 15, 15)
    assert crop_box((40, 30, 50, 40), (50, 40), 0.5) == (35, 25, 50, 40)
    assert crop_box((-5, -5, 60, 60), (50, 40), 0.1) == (0, 0, 50, 40)
    assert crop_box((50, 40, 50, 40), (50, 40), 0.1) == (49, 39, 50, 40)  # never empty


def boxes():
    rows = [(f"{ITEM}:p{i}:b0", f"{ITEM}:p{i}", ITEM, 10.0 * i, 0.0, 10.0 * i + 8, 8.0, 1.0 - i / 10, 0)
            for i in range(4)]
    return pd.DataFrame(rows, columns=["box_id", "phrase_id", "item_id", "x0", "y0", "x1", "y1", "score", "box_rank"])


class Scripted:
    """A judge returning set probabilities per phrase (for the rule only; real judges are below)."""

    def __init__(self, verdicts):
        self.verdicts, self.calls = verdicts, []

    def __call__(self, crops, phrases):
        self.calls.append([crop.size for crop in crops])
        return [self.verdicts[p] for p in phrases]


def test_rovi_margin_keeps_only_a_clear_yes_and_records_the_probabilities():
    settings = VerifySettings(model="x", batch_size=3)
    assert settings.margin == ROVI_MARGIN == 0.2 and "Is this an image of {phrase}?" in settings.question
    verdicts = {"p0": (0.9, 0.05), "p1": (0.5, 0.35), "p2": (0.55, 0.35), "p3": (0.1, 0.8)}
    judge = Scripted(verdicts)
    kept, removals, table = verify_filter(boxes(), {f"{ITEM}:p{i}": f"p{i}" for i in range(4)},
                                          lambda item: Image.new("RGB", (64, 16)), judge, settings)
    # p1: 0.5 < 0.35 + 0.2 removed though P(yes) > P(no); p2: 0.55 >= 0.55 kept.
    assert sorted(kept.phrase_id) == [f"{ITEM}:p0", f"{ITEM}:p2"] and sorted(kept.box_rank) == [0, 0]
    assert [len(call) for call in judge.calls] == [3, 1]  # batched by batch_size
    assert [(r.filter, r.phrase_id) for r in removals] == [("verify_crop", f"{ITEM}:p1"), ("verify_crop", f"{ITEM}:p3")]
    assert removals[0].value == pytest.approx(0.15) and removals[0].threshold == 0.2
    assert "P(yes) 0.5000, P(no) 0.3500" in removals[0].detail
    assert list(table.columns) == VERDICT_COLUMNS and table.kept.tolist() == [True, False, True, False]
    assert (table.crop_x0.tolist(), table.crop_x1.tolist()) == ([0, 9, 19, 29], [9, 19, 29, 39])


def test_nothing_to_judge_asks_no_judge():
    kept, removals, table = verify_filter(boxes().iloc[:0], {}, None, None, VerifySettings(model="x"))
    assert kept.empty and not removals and table.empty


@pytest.mark.parametrize("data, message", [
    ({"judge": "vlm"}, "quality.verify.model: the vlm judge needs a model"),
    ({"judge": "clip", "model": "m"}, "quality.verify.judge: expected one of vlm, itm"),
    ({"judge": "itm", "margin": 2}, "quality.verify.margin: expected a number in [-1, 1]"),
    ({"judge": "itm", "question": "Is it?"}, "quality.verify.question: expected a question with {phrase}"),
    ({"judge": "itm", "batch_size": 0}, "quality.verify.batch_size: expected an integer >= 1"),
    ({"judge": "itm", "crop": 0.1}, "quality.verify: unknown field(s) crop"),
])
def test_bad_verify_settings_name_the_field(data, message):
    with pytest.raises(QualitySettingsError) as error:
        QualitySettings.from_dict({"verify": data})
    assert message in str(error.value)


def crops_and_phrases():
    image = Image.effect_mandelbrot((96, 64), (-2, -1, 1, 1), 50).convert("RGB")
    crops = [image.crop(crop_box(box, image.size, 0.1)) for box in
             [(0, 0, 30, 20), (40, 10, 90, 60), (70, 40, 96, 64), (10, 30, 20, 64), (0, 0, 96, 64)]]
    return crops, ["a red square", "a blue circle", "a dog", "the green triangle", "a cat"]


@pytest.mark.parametrize("model", ["tiny:llava", "tiny:qwen2-vl"])
def test_a_tiny_vlm_verifier_batched_equals_one_by_one(tiny_models, model):
    from synground_assets.adapters.verifier import VLMVerifier

    verifier = VLMVerifier(RoleSpec(adapter="vlm", model=model, device="cpu"), VerifySettings.question)
    crops, phrases = crops_and_phrases()
    batched = judge_batched(verifier, crops, phrases, batch_size=5)
    one_by_one = judge_batched(verifier, crops, phrases, batch_size=1)
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-4, atol=1e-8)
    assert all(0 <= y <= 1 and 0 <= n <= 1 and y + n <= 1 + 1e-6 for y, n in batched)
    assert verifier.yes_ids and verifier.no_ids and not set(verifier.yes_ids) & set(verifier.no_ids)
    assert "Is this an image of a dog? Answer yes or no." in verifier.prompts(["a dog"])[0]


def test_the_itm_verifier_batched_equals_one_by_one(tiny_models):
    from synground_assets.adapters.grounding import load_grounding_model, resolved_spec
    from synground_assets.adapters.verifier import ItmVerifier

    model = load_grounding_model(resolved_spec(RoleSpec(adapter="blip", model="tiny:blip-itm-shapes", device="cpu")))
    verifier = ItmVerifier(model)
    crops, phrases = crops_and_phrases()
    batched = judge_batched(verifier, crops, phrases, batch_size=5)
    np.testing.assert_allclose(batched, judge_batched(verifier, crops, phrases, batch_size=2), rtol=1e-4, atol=1e-7)
    assert all(y == pytest.approx(1 - n) for y, n in batched)
