"""Image generators on tiny random diffusers pipelines (2 denoising steps, 64 px)."""

import numpy as np
import pytest

from synground_assets.adapters.hf_image import DiffusersImageGenerator, GligenImageGenerator, article_phrases
from synground_assets.adapters.loading import ModelLoadError

PROMPTS = ["a red cat on a blue couch", "a dog", "a green car next to the old bus"]


def pixels(generated):
    return np.asarray(generated.image, dtype=np.int16)


@pytest.fixture(scope="module")
def generator(cpu_spec):
    generator = DiffusersImageGenerator(cpu_spec("diffusers", "tiny:stable-diffusion", batch_size=2,
                                                 num_inference_steps=2))
    yield generator
    generator.release()


@pytest.fixture(scope="module")
def gligen(cpu_spec):
    generator = GligenImageGenerator(cpu_spec("gligen", "tiny:gligen", num_inference_steps=2))
    yield generator
    generator.release()


def test_one_image_per_prompt_at_the_pipeline_size(generator):
    images = generator.generate(PROMPTS, [1, 2, 3])
    assert [g.image.size for g in images] == [(64, 64)] * 3
    assert all(g.layout is None for g in images)


def test_an_image_depends_on_its_seed_not_its_batch(generator):
    batched = generator.generate(PROMPTS, [1, 2, 3])
    one_by_one = [generator.generate([p], [s])[0] for p, s in zip(PROMPTS, [1, 2, 3])]
    for a, b in zip(batched, one_by_one):
        assert np.abs(pixels(a) - pixels(b)).max() <= 2  # float rounding of batched convolutions
    again = generator.generate([PROMPTS[0]], [1])[0]
    other_seed = generator.generate([PROMPTS[0]], [99])[0]
    assert np.array_equal(pixels(again), pixels(one_by_one[0]))
    assert np.abs(pixels(other_seed) - pixels(again)).max() > 10


def test_generator_rejects_mismatched_seeds(generator):
    with pytest.raises(ValueError, match="got 2 prompts but 1 seeds"):
        generator.generate(PROMPTS[:2], [1])


def test_gligen_returns_its_layout_as_boxes(gligen):
    results = gligen.generate(PROMPTS, [1, 2, 3])
    first = results[0]
    assert [phrase for phrase, _ in first.layout] == ["a red cat", "a blue couch"]
    for result, prompt in zip(results, PROMPTS):
        width, height = result.image.size
        for phrase, (x0, y0, x1, y1) in result.layout:
            assert phrase.lower() in prompt.lower()
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
            assert (x1 - x0) >= 0.2 * width - 1e-6


def test_gligen_layout_is_seeded(gligen):
    first = gligen.generate(PROMPTS[:1], [5])[0]
    again = gligen.generate(PROMPTS[:1], [5])[0]
    other = gligen.generate(PROMPTS[:1], [6])[0]
    assert first.layout == again.layout and first.layout != other.layout
    assert np.array_equal(pixels(first), pixels(again))


def test_gligen_without_phrases_draws_without_layout(gligen):
    result = gligen.generate(["zzz qqq"], [1])[0]
    assert result.layout == [] and result.image.size == (64, 64)


def test_gligen_layout_phrases_from_an_llm(cpu_spec):
    generator = GligenImageGenerator(cpu_spec("gligen", "tiny:gligen", num_inference_steps=1,
                                              layout_phrase_model="tiny:causal-lm"))
    phrases = generator.layout_phrases(PROMPTS)
    assert len(phrases) == 3 and all(p.lower() in PROMPTS[i].lower() for i, ps in enumerate(phrases) for p in ps)
    generator.release()


@pytest.mark.parametrize("text, expected", [
    ("A cat sleeping on a white couch.", ["A cat", "a white couch"]),
    ("the big stuffed teddy bear, and two dogs", ["the big stuffed teddy bear", "two dogs"]),
    ("A man with an umbrella", ["A man", "an umbrella"]),
    ("nothing here", []),
])
def test_article_phrases(text, expected):
    assert article_phrases(text) == expected


def test_the_safety_checkers_flag_travels_with_the_image(cpu_spec, generator):
    """A real StableDiffusionSafetyChecker whose concept thresholds (-2) sit below any cosine
    similarity flags every image: the pipeline blacks them out and the adapter reports the flag."""
    flagging = DiffusersImageGenerator(cpu_spec("diffusers", "tiny:stable-diffusion-flagging", batch_size=2,
                                                num_inference_steps=2))
    flagged = flagging.generate(PROMPTS[:2], [1, 2])
    flagging.release()
    assert all(g.flagged and pixels(g).max() == 0 for g in flagged)
    assert not any(g.flagged for g in generator.generate(PROMPTS[:2], [1, 2]))  # no checker: never flagged


# --- any AutoPipelineForText2Image family (tiny random pipelines of the real classes) -------------

FAMILIES = [  # tiny model, its pipeline class, options (small sizes keep CPU time low)
    ("tiny:stable-diffusion-xl", "StableDiffusionXLPipeline", {"height": 64}),
    ("tiny:stable-diffusion-3", "StableDiffusion3Pipeline", {"height": 32, "max_sequence_length": 16}),
    ("tiny:flux", "FluxPipeline", {"height": 32, "max_sequence_length": 16, "guidance_scale": 0.0}),
    ("tiny:pixart-sigma", "PixArtSigmaPipeline", {"max_sequence_length": 16}),
    # Sana at its own defaults (resolution binning, the complex human instruction): 64 px drawn at a
    # 512 px bin and resized; and without binning, drawn at 64 px itself.
    ("tiny:sana", "SanaPipeline", {"height": 64, "max_sequence_length": 16}),
    ("tiny:sana", "SanaPipeline", {"height": 64, "max_sequence_length": 16, "use_resolution_binning": False,
                                   "complex_human_instruction": []}),
]


@pytest.fixture(scope="module", params=FAMILIES,
                ids=[family[1] + ("-unbinned" if "use_resolution_binning" in family[2] else "") for family in FAMILIES])
def family(request, cpu_spec):
    model, pipeline, options = request.param
    generator = DiffusersImageGenerator(cpu_spec("diffusers", model, batch_size=2, num_inference_steps=2, **options))
    yield generator, pipeline, options
    generator.release()


def test_every_family_draws_one_seeded_image_per_prompt(family):
    generator, pipeline, options = family
    assert generator.kind == pipeline and generator.info.settings["pipeline"] == pipeline
    images = generator.generate(PROMPTS, [1, 2, 3])
    side = options.get("height", generator.height)
    assert [g.image.size for g in images] == [(side, side)] * 3
    one_by_one = [generator.generate([p], [s])[0] for p, s in zip(PROMPTS, [1, 2, 3])]
    for a, b in zip(images, one_by_one):
        assert np.abs(pixels(a) - pixels(b)).max() <= 2  # its seed alone decides (batch rounding)
    again = generator.generate(PROMPTS[:1], [1])[0]
    other_seed = generator.generate(PROMPTS[:1], [99])[0]
    assert np.array_equal(pixels(again), pixels(one_by_one[0]))
    assert np.abs(pixels(other_seed) - pixels(again)).max() > 10


def test_unset_settings_take_the_pipelines_own_defaults(cpu_spec):
    flux = DiffusersImageGenerator(cpu_spec("diffusers", "tiny:flux", height=32))
    assert (flux.num_inference_steps, flux.guidance_scale) == (28, 3.5)  # FluxPipeline.__call__'s defaults
    flux.release()
    sdxl = DiffusersImageGenerator(cpu_spec("diffusers", "tiny:stable-diffusion-xl"))
    assert (sdxl.num_inference_steps, sdxl.guidance_scale, sdxl.height) == (30, 7.5, 64)  # this project's
    sdxl.release()


@pytest.mark.parametrize("model, option, value", [
    ("tiny:stable-diffusion", "max_sequence_length", 16),
    ("tiny:stable-diffusion", "use_resolution_binning", False),
    ("tiny:pixart-sigma", "complex_human_instruction", []),
])
def test_an_option_the_family_does_not_take_is_named(cpu_spec, model, option, value):
    with pytest.raises(ModelLoadError, match=f"Pipeline takes no option '{option}'"):
        DiffusersImageGenerator(cpu_spec("diffusers", model, **{option: value}))


def test_sana_takes_its_family_options(cpu_spec):
    """Sana's settings reach its pipeline: a non-square size is honoured with and without resolution
    binning, and the instruction can be turned off. With it on (about 200 tokens of the tiny
    tokenizer before the prompt), the prompt keeps max_sequence_length - 2 tokens (words here) of
    its own: an 11th word changes the image, a 15th is cut."""
    binned = DiffusersImageGenerator(cpu_spec("diffusers", "tiny:sana", height=64, width=96, num_inference_steps=2,
                                              max_sequence_length=16))
    assert binned.height == 64 and binned.info.settings["use_resolution_binning"] is True
    assert binned.info.settings["complex_human_instruction"] is True
    prompt = "a red cat on a blue couch next to the old"  # 10 words, max_sequence_length 16
    # One call each: an image depends on its prompt and seed only, bit for bit (same prompt: equal).
    first, again, one_more_word = (binned.generate([p], [1])[0] for p in (prompt, prompt, prompt + " bus"))
    assert first.image.size == (96, 64) and np.array_equal(pixels(first), pixels(again))
    assert not np.array_equal(pixels(first), pixels(one_more_word))
    fourteen = prompt + " bus with a green"
    fourteen_words, fifteen_words = (binned.generate([p], [1])[0] for p in (fourteen, fourteen + " car"))
    assert np.array_equal(pixels(fourteen_words), pixels(fifteen_words))  # the 15th is cut
    binned.release()
    plain = DiffusersImageGenerator(cpu_spec("diffusers", "tiny:sana", height=64, width=96, num_inference_steps=2,
                                             max_sequence_length=16, use_resolution_binning=False,
                                             complex_human_instruction=[]))
    assert plain.info.settings["complex_human_instruction"] is False
    assert plain.call_settings(1)["use_resolution_binning"] is False
    assert plain.generate(["a red cat"], [1])[0].image.size == (96, 64)
    plain.release()


def test_sana_without_binning_needs_a_size_its_vae_divides(cpu_spec):
    with pytest.raises(ModelLoadError, match="without resolution binning SanaPipeline draws at the asked size, "
                                             "which must be a multiple of 32; got 40 x 40"):
        DiffusersImageGenerator(cpu_spec("diffusers", "tiny:sana", height=40, use_resolution_binning=False))
    with pytest.raises(ModelLoadError, match="complex_human_instruction must be a list of strings"):
        DiffusersImageGenerator(cpu_spec("diffusers", "tiny:sana", complex_human_instruction=[1, 2]))
