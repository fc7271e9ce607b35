"""The images stage: batched == one by one, regeneration with the next seed, skipped items,
near-duplicates (this shard's and earlier shards'), degenerate images."""

import pandas as pd
from PIL import Image

from synground_assets.pipeline.images import draw_images
from synground_assets.quality.images import perceptual_hash
from synground_assets.records.items import derive_seed
from synground_assets.records.previews import png_bytes
from synground_assets.roles.base import AdapterInfo, GeneratedImage
from synground_assets.tiny.shapes import ShapesImageGenerator
from synground_assets_tests.pipeline.stand_ins import Suite, described, earlier_rows, same_frames, shapes

NO_EARLIER = earlier_rows(pd.DataFrame(columns=["item_id", "phash"]))


class FakeGenerator:
    """The shapes renderer, with faults on demand: `flag(prompt, seed)` marks an output flagged,
    `fail(prompt)` raises, `repeat` draws one fixed picture for every prompt."""

    info = AdapterInfo("fake-generator", "fake")

    def __init__(self, flag=lambda prompt, seed: False, fail=lambda prompt: False, repeat=False):
        self.shapes = ShapesImageGenerator(64)
        self.flag, self.fail, self.repeat = flag, fail, repeat
        self.seeds: list[int] = []

    def generate(self, prompts, seeds):
        self.seeds += seeds
        outputs = []
        for prompt, seed in zip(prompts, seeds):
            if self.fail(prompt):
                raise ValueError(f"cannot draw {prompt!r}")
            drawn = self.shapes.render("a red square above a blue diamond" if self.repeat else prompt,
                                       7 if self.repeat else seed)
            outputs.append(GeneratedImage(drawn.image, ground_truth=drawn.ground_truth,
                                          flagged=self.flag(prompt, seed)))
        return outputs


def image_bytes(result) -> dict[str, bytes]:
    return {file: png_bytes(image) for file, image in result.images.items()}


def test_batched_images_equal_one_by_one():
    texts = described()
    batched = draw_images(shapes(batch_sizes={"image_generator": 4}), "00000", texts, Suite(), NO_EARLIER)
    one_by_one = draw_images(shapes(batch_sizes={"image_generator": 1}), "00000", texts, Suite(), NO_EARLIER)
    assert len(batched.table) == len(texts) and not batched.skipped
    assert same_frames(batched.tables, one_by_one.tables) and same_frames(batched.lineage, one_by_one.lineage)
    assert image_bytes(batched) == image_bytes(one_by_one)
    assert batched.table.file.tolist() == [f"images/{i:04d}.png" for i in range(len(texts))]
    assert batched.table.image_path[0] == "shapes/images/00000/images/0000.png"
    assert batched.table.phash.tolist() == [perceptual_hash(batched.images[f]) for f in batched.table.file]
    assert "ground_truth.parquet" in batched.tables and "layout.parquet" not in batched.tables


def test_a_flagged_image_is_regenerated_with_the_next_seed():
    texts = described()
    first_seed = {derive_seed("image", item) for item in texts.item_id}
    generator = FakeGenerator(flag=lambda prompt, seed: seed in first_seed)
    result = draw_images(shapes(), "00000", texts, Suite(image_generator=generator), NO_EARLIER)
    assert len(result.table) == len(texts) and not result.skipped
    assert result.table.image_seed.tolist() == [derive_seed("image", item) + 1 for item in texts.item_id]
    assert [(r.item_id, r.filter) for r in result.removals] == [(item, "safety_checker") for item in texts.item_id]
    assert result.removals[0].detail.startswith(f"attempt 0, seed {derive_seed('image', texts.item_id[0])}: ")
    report = result.lineage["shard_quality"]
    assert report[["filter", "removed", "kept"]].values.tolist() == [["safety_checker", len(texts), len(texts)]]


def test_an_image_flagged_on_every_attempt_is_skipped_with_its_reason():
    generator = FakeGenerator(flag=lambda prompt, seed: "circle" in prompt)
    texts = described()
    result = draw_images(shapes(quality={"regenerate_attempts": 2}), "00000", texts,
                         Suite(image_generator=generator), NO_EARLIER)
    circles = [item for item, text in zip(texts.item_id, texts.description) if "circle" in text]
    assert [item for item, _ in result.skipped] == circles
    assert all("no usable image after 3 attempt(s)" in reason for _, reason in result.skipped)
    assert set(result.table.item_id) == set(texts.item_id) - set(circles)
    assert len(result.removals) == 3 * len(circles)


def test_an_item_the_generator_fails_on_is_skipped_and_its_batch_mates_kept():
    generator = FakeGenerator(fail=lambda prompt: "green circle" in prompt)
    texts = described()
    result = draw_images(shapes(batch_sizes={"image_generator": 4}), "00000", texts,
                         Suite(image_generator=generator), NO_EARLIER)
    assert result.skipped == [(texts.item_id[1], f"ValueError: cannot draw {texts.description[1]!r}")]
    assert len(result.table) == len(texts) - 1 and texts.item_id[1] not in set(result.table.item_id)


def test_near_duplicates_keep_the_first_item_and_the_earlier_shards_item():
    texts = described()
    repeated = Suite(image_generator=FakeGenerator(repeat=True))
    result = draw_images(shapes(), "00001", texts, repeated, NO_EARLIER)
    assert result.table.item_id.tolist() == [texts.item_id[0]]
    assert {r.filter for r in result.removals} == {"near_duplicate_image"}
    assert all(f"from {texts.item_id[0]}" in r.detail for r in result.removals)
    assert result.counts == {"images": 1, "removed_images": len(texts) - 1}
    earlier = pd.DataFrame({"item_id": ["shapes:00000:0003"], "phash": [result.table.phash[0]]})
    later = draw_images(shapes(), "00001", texts, repeated, earlier_rows(earlier))
    assert later.table.empty and later.images == {}
    assert all("from shapes:00000:0003" in r.detail for r in later.removals)


def test_dedup_off_keeps_repeated_pictures():
    result = draw_images(shapes(quality={"image_dedup_distance": None}), "00000", described(),
                         Suite(image_generator=FakeGenerator(repeat=True)), NO_EARLIER)
    assert len(result.table) == len(described()) and not result.removals


class FlatGenerator:
    info = AdapterInfo("flat", "flat")

    def generate(self, prompts, seeds):
        return [GeneratedImage(Image.new("RGB", (32, 32), (128, 128, 128))) for _ in prompts]


def test_a_degenerate_image_is_removed_with_its_pixel_std():
    result = draw_images(shapes(quality={"regenerate_attempts": 0}), "00000", described()[:1],
                         Suite(image_generator=FlatGenerator()), NO_EARLIER)
    assert result.table.empty and len(result.skipped) == 1
    (removal,) = result.removals
    assert removal.filter == "degenerate_image" and removal.value == 0.0 and removal.threshold == 2.0


class Files:
    """Records what a stage puts and takes back, and how many images had been drawn by then."""

    def __init__(self, generator):
        self.generator, self.put_at, self.discarded = generator, {}, []

    def put(self, file, image):
        assert file not in self.put_at
        self.put_at[file] = len(self.generator.seeds)

    def discard(self, file):
        self.discarded.append(file)


def test_each_accepted_image_is_handed_out_as_its_batch_is_checked_and_duplicates_taken_back():
    texts = described()
    recipe = shapes(batch_sizes={"image_generator": 2})
    in_memory = draw_images(recipe, "00000", texts, Suite(image_generator=FakeGenerator()), NO_EARLIER)
    generator = FakeGenerator()
    files = Files(generator)
    streamed = draw_images(recipe, "00000", texts, Suite(image_generator=generator), NO_EARLIER, files=files)
    assert streamed.images == {} and sorted(files.put_at) == sorted(in_memory.images) and not files.discarded
    assert files.put_at["images/0000.png"] == 2  # before the second batch is drawn
    assert same_frames(streamed.tables, in_memory.tables)
    repeated = FakeGenerator(repeat=True)
    files = Files(repeated)
    result = draw_images(recipe, "00000", texts, Suite(image_generator=repeated), NO_EARLIER, files=files)
    assert sorted(files.discarded) == sorted(set(files.put_at) - set(result.table.file))
