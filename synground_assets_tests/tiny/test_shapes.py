"""The shapes world: descriptions name every object, images honour them, the detector finds them."""

import pytest

from synground_assets.records.items import item_id, item_seed
from synground_assets.roles.base import PhraseCandidates
from synground_assets.tiny.shapes import (
    COLOURS,
    SHAPES,
    ShapesConceptSampler,
    ShapesDescriber,
    ShapesDetector,
    ShapesImageGenerator,
    ShapesPhraseExtractor,
    _Placed,
    _satisfies,
    object_phrase,
    parse_relations,
)


def box_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def make_items(count: int, recipe: str = "shapes-test"):
    ids = [item_id(recipe, i // 64, i % 64) for i in range(count)]
    seeds = [item_seed(recipe, i // 64, i % 64) for i in range(count)]
    return ShapesConceptSampler().sample(ids, seeds)


def test_concepts_are_two_to_four_distinct_objects():
    for item in make_items(300):
        assert 2 <= len(item.concepts) <= 4
        assert len(set(item.concepts)) == len(item.concepts)
        for concept in item.concepts:
            colour, shape = concept.split()
            assert colour in COLOURS and shape in SHAPES


def test_concepts_depend_only_on_the_seed():
    assert make_items(20) == make_items(20)
    assert make_items(20, "other") != make_items(20)


def test_description_names_every_object_and_uses_relations():
    items = make_items(200)
    texts = [d.text for d in ShapesDescriber().describe(items)]
    for item, text in zip(items, texts):
        for concept in item.concepts:
            assert object_phrase(concept) in text.lower()
    assert sum(bool(parse_relations(t)) for t in texts) > 50  # some descriptions carry relations


def test_rendered_layout_respects_the_described_relations():
    items = make_items(200)
    texts = [d.text for d in ShapesDescriber().describe(items)]
    generator = ShapesImageGenerator()
    checked = 0
    for item, text in zip(items, texts):
        truth = dict(generator.render(text, item.seed).ground_truth)
        for a, relation, b in parse_relations(text):
            box_a, box_b = truth[object_phrase(" ".join(a))], truth[object_phrase(" ".join(b))]
            assert _satisfies(_Placed(*a, tuple(map(int, box_a))), relation, _Placed(*b, tuple(map(int, box_b)))), text
            checked += 1
    assert checked > 50


def test_phrase_extractor_reads_the_text_alone():
    text = "A picture of an orange circle to the left of a blue square and a green triangle."
    expected = PhraseCandidates(("an orange circle", "a blue square", "a green triangle"))
    assert ShapesPhraseExtractor().extract([text]) == [expected]


def test_detector_matches_the_true_layout_on_1000_items():
    """IoU >= 0.9 for >= 95% of phrases; the detector sees pixels only, the truth is the renderer's."""
    items = make_items(1000)
    texts = [d.text for d in ShapesDescriber().describe(items)]
    generated = ShapesImageGenerator().generate(texts, [item.seed for item in items])
    phrases = [c.phrases for c in ShapesPhraseExtractor().extract(texts)]
    detections = ShapesDetector().detect([g.image for g in generated], phrases)
    total = matched = 0
    for output, item_phrases, found in zip(generated, phrases, detections):
        truth = dict(output.ground_truth)
        boxes = {d.phrase_index: d.box_xyxy for d in found}
        for index, phrase in enumerate(item_phrases):
            total += 1
            matched += index in boxes and box_iou(boxes[index], truth[phrase]) >= 0.9
    assert total > 2500
    assert matched / total >= 0.95


def test_detector_finds_nothing_for_absent_or_foreign_phrases():
    output = ShapesImageGenerator().render("A picture of a red circle.", seed=3)
    found = ShapesDetector().detect([output.image], [["a blue square", "a dog", "a red circle"]])[0]
    assert [d.phrase_index for d in found] == [2]


def test_generator_rejects_a_prompt_without_objects():
    with pytest.raises(ValueError, match="found no '<colour> <shape>' object"):
        ShapesImageGenerator().render("a dog on a sofa", seed=1)


def test_corrupted_detector_moves_the_chosen_share_of_boxes_reproducibly():
    """`corrupt_fraction`: boxes swapped between phrases or shifted off their object, seeded, score kept."""
    items = make_items(60)
    texts = [d.text for d in ShapesDescriber().describe(items)]
    images = [g.image for g in ShapesImageGenerator().generate(texts, [item.seed for item in items])]
    phrases = [c.phrases for c in ShapesPhraseExtractor().extract(texts)]
    clean = ShapesDetector().detect(images, phrases)
    corrupt = ShapesDetector(corrupt_fraction=0.3, corrupt_seed=1)
    found = corrupt.detect(images, phrases)
    assert found == corrupt.detect(images, phrases)  # reproducible
    assert found[:5] == corrupt.detect(images[:5], phrases[:5])  # independent of the batch
    assert ShapesDetector(corrupt_fraction=0.0).detect(images, phrases) == clean
    pairs = [(c, f) for cs, fs in zip(clean, found) for c, f in zip(cs, fs)]
    moved = [c for c, f in pairs if box_iou(c.box_xyxy, f.box_xyxy) < 0.5]
    assert 0.2 <= len(moved) / len(pairs) <= 0.5  # 30% chosen; a swap moves two boxes
    assert all(f.score == c.score and f.phrase_index == c.phrase_index for c, f in pairs)
    assert corrupt.info.settings["corrupt_fraction"] == 0.3
    with pytest.raises(ValueError, match="corrupt_fraction must be between 0 and 1"):
        ShapesDetector(corrupt_fraction=1.5)
