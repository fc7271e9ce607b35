"""Describers and the phrase extractor on tiny random models: real from_pretrained + generate code."""

import pytest

from synground_assets.adapters.hf_text import (
    CHAT_TEMPLATES,
    CaptionSummarizer,
    ConcatenationDescriber,
    ConceptDescriber,
    ImageCaptioner,
    LLMPhraseExtractor,
    clean_text,
    load_images,
)
from synground_assets.adapters.sources import CaptionsSampler, ImageFolderSampler
from synground_assets.roles.base import GeneratedText, PhraseCandidates, SourceItem

DESCRIPTION = "A cat sleeps on a couch next to a white stuffed teddy bear."


@pytest.fixture(scope="module")
def photo_items(tiny_models):
    sampler = ImageFolderSampler("tiny:photos")
    return [SourceItem(item_id=f"photo-{i}", seed=i, source_image=p) for i, p in enumerate(sampler.paths)]


@pytest.fixture(scope="module")
def caption_items(tiny_models):
    return CaptionsSampler("tiny:photos/captions.json").sample(["c0", "c1", "c2"], [0, 1, 2])


@pytest.fixture(scope="module")
def chat_describer(cpu_spec):
    describer = ConceptDescriber(cpu_spec("llm-concept2text", "tiny:causal-lm", batch_size=2, max_new_tokens=8))
    yield describer
    describer.release()


@pytest.mark.parametrize("model", ["tiny:llava", "tiny:llava-next", "tiny:idefics3", "tiny:qwen2-vl", "tiny:qwen2.5-vl",
                                   "tiny:blip-captioning"])
def test_image_captioner_batched_equals_one_by_one(cpu_spec, photo_items, model):
    captioner = ImageCaptioner(cpu_spec("image-captioner", model, batch_size=2, max_new_tokens=8))
    batched = captioner.describe(photo_items)
    one_by_one = [captioner.describe([item])[0] for item in photo_items]
    assert batched == one_by_one
    assert len(batched) == len(photo_items)
    assert all(isinstance(d, GeneratedText) and isinstance(d.text, str) for d in batched)
    # The tower sees the pixels: different photos, different text.
    assert len(set(batched)) > 1
    assert captioner.info.model_id == model and captioner.info.settings["prompt"] == captioner.prompt


def test_llava_gets_the_detailed_description_prompt(cpu_spec):
    captioner = ImageCaptioner(cpu_spec("image-captioner", "tiny:llava", max_new_tokens=2))
    assert captioner.prompt.startswith("Describe this image in detail")


@pytest.mark.parametrize("model", ["tiny:qwen2-vl", "tiny:qwen2.5-vl"])
def test_qwen2_vl_prompt_holds_one_image_token_per_merged_patch(cpu_spec, photo_items, model):
    """Qwen2-VL's processor expands the template's one <|image_pad|> to (t * h * w) / merge^2 tokens
    of each image's grid, here without its video processor (no torchvision)."""
    captioner = ImageCaptioner(cpu_spec("image-captioner", model, max_new_tokens=2))
    images = load_images(photo_items[:2])
    inputs = captioner.prepare_inputs(images)
    pad = captioner.processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    merge = captioner.processor.image_processor.merge_size
    per_image = (inputs["input_ids"] == pad).sum(dim=1).tolist()
    assert per_image == [int(grid.prod()) // merge**2 for grid in inputs["image_grid_thw"]]
    assert all(count >= 4 for count in per_image)
    # Qwen's template: the image tokens between <|vision_start|> and <|vision_end|>, then the question.
    tokens = captioner.processor.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0])
    start = tokens.index("<|vision_start|>")
    assert tokens[start + 1:start + 1 + per_image[0]] == ["<|image_pad|>"] * per_image[0]
    assert tokens[start + 1 + per_image[0]] == "<|vision_end|>"
    assert tokens[start + 2 + per_image[0]:start + 6 + per_image[0]] == ["describe", "this", "image", "in"]


def test_image_captioner_names_the_item_whose_image_is_missing(cpu_spec, photo_items):
    captioner = ImageCaptioner(cpu_spec("image-captioner", "tiny:blip-captioning", max_new_tokens=2))
    broken = SourceItem(item_id="item-7", seed=7, source_image="/nowhere/cat.jpg")
    with pytest.raises(ValueError, match="item item-7: source image '/nowhere/cat.jpg' does not exist"):
        captioner.describe([photo_items[0], broken])


def test_concept_describer_batched_equals_one_by_one(chat_describer):
    items = [SourceItem(f"i{n}", n, concepts=c) for n, c in enumerate([("dog",), ("red cup", "laptop"), ("giraffe",)])]
    batched = chat_describer.describe(items)
    assert batched == [chat_describer.describe([item])[0] for item in items]
    assert len(set(batched)) > 1  # the concepts reach the model


def test_concept_describer_prompt_has_in_context_examples(chat_describer):
    conversation = chat_describer.conversation(chat_describer.examples, "Q")
    roles = [m["role"] for m in conversation]
    assert roles[0] == "system" and roles[-1] == "user"
    assert roles.count("assistant") == len(chat_describer.examples) == 3
    prompt = chat_describer.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    assert prompt.rstrip().endswith("<|assistant|>")


def test_concept_describer_needs_concepts(chat_describer):
    with pytest.raises(ValueError, match="item x: Concept2Text needs concepts"):
        chat_describer.describe([SourceItem("x", 1)])


def test_sampling_is_seeded(cpu_spec):
    describer = ConceptDescriber(cpu_spec("llm-concept2text", "tiny:causal-lm", max_new_tokens=8, do_sample=True))
    items = [SourceItem("i", 5, concepts=("dog",))]
    assert describer.describe(items) == describer.describe(items)


def test_caption_summarizer_reads_all_captions(cpu_spec, caption_items):
    summarizer = CaptionSummarizer(cpu_spec("llm-text2text", "tiny:causal-lm", batch_size=2, max_new_tokens=8))
    batched = summarizer.describe(caption_items)
    assert batched == [summarizer.describe([item])[0] for item in caption_items]
    question = summarizer._question(caption_items[0].source_captions)
    assert all(caption in question for caption in caption_items[0].source_captions)


def test_concatenation_joins_captions_as_sentences():
    items = [SourceItem("i", 0, source_captions=("A dog on a beach", "A brown dog runs."))]
    assert ConcatenationDescriber().describe(items) == [GeneratedText("A dog on a beach. A brown dog runs.")]
    with pytest.raises(ValueError, match="item j: Concatenation needs source captions"):
        ConcatenationDescriber().describe([SourceItem("j", 0)])


def test_phrase_extractor_returns_candidates_per_description(cpu_spec):
    extractor = LLMPhraseExtractor(cpu_spec("llm-phrases", "tiny:causal-lm", batch_size=2, max_new_tokens=6))
    descriptions = ["A cat on a couch.", "Two men carry a boat.", "A red kite."]
    batched = extractor.extract(descriptions)
    assert batched == [extractor.extract([d])[0] for d in descriptions]
    assert all(isinstance(p, PhraseCandidates) and all(isinstance(x, str) and x for x in p.phrases) for p in batched)


def test_chat_template_option_names_a_known_format(cpu_spec):
    extractor = LLMPhraseExtractor(cpu_spec("llm-phrases", "tiny:causal-lm", chat_template="vicuna", max_new_tokens=2))
    assert extractor.tokenizer.chat_template == CHAT_TEMPLATES["vicuna"]
    prompt = extractor.tokenizer.apply_chat_template(extractor.conversation([], "Q"), tokenize=False,
                                                     add_generation_prompt=True)
    assert prompt.endswith("USER: Q ASSISTANT:")


@pytest.mark.parametrize("raw, clean", [("  Description:  A  dog.\n", "A dog."), ("a cat", "a cat"), ("", "")])
def test_clean_text(raw, clean):
    assert clean_text(GeneratedText(raw, True)) == GeneratedText(clean, True)


def test_token_limit_is_detected_from_the_last_generated_token():
    import torch

    from synground_assets.adapters.hf_text import hit_token_limit

    new_tokens = torch.tensor([[5, 6, 7], [5, 2, 0], [5, 6, 2]])  # still going / EOS then padding / EOS last
    assert hit_token_limit(new_tokens, {2, 0}) == [True, False, False]


def test_describer_outputs_say_when_they_hit_the_token_limit(cpu_spec):
    # Two new tokens from random weights: decoding is still going when the limit stops it.
    describer = ConceptDescriber(cpu_spec("llm-concept2text", "tiny:causal-lm", max_new_tokens=2))
    (text,) = describer.describe([SourceItem("i", 1, concepts=("dog",))])
    assert isinstance(text, GeneratedText) and text.hit_token_limit


def test_phrase_answers_cut_at_the_limit_lose_their_last_phrase_and_refusals_are_flagged(cpu_spec):
    extractor = LLMPhraseExtractor(cpu_spec("llm-phrases", "tiny:causal-lm", max_new_tokens=6))
    cut = extractor.candidates(GeneratedText("a cat\na couch\na white stuffed ted", True), DESCRIPTION)
    assert cut.phrases == ("a cat", "a couch") and cut.cut_off == "a white stuffed ted" and cut.problem is None
    whole = extractor.candidates(GeneratedText("a cat\na couch", False), DESCRIPTION)
    assert whole.phrases == ("a cat", "a couch") and whole.cut_off is None
    refusal = extractor.candidates(GeneratedText("I'm sorry, I cannot list objects.", False), DESCRIPTION)
    assert refusal.problem and "refused" in refusal.problem


def test_an_answer_that_repeats_the_description_is_an_echo_not_phrases(cpu_spec):
    """SmolLM2-135M's most common failure (measured, docs/models.md): it copies the description back, once
    or line after line; a short description may be its own phrase, so it is never an echo."""
    extractor = LLMPhraseExtractor(cpu_spec("llm-phrases", "tiny:causal-lm", max_new_tokens=6))
    echo = extractor.candidates(GeneratedText(DESCRIPTION.lower().rstrip(".") + "\n" + DESCRIPTION, False),
                                DESCRIPTION)
    assert echo.problem and "repeats the description" in echo.problem
    listed = extractor.candidates(GeneratedText("a cat\na cat\na couch\na cat", True), DESCRIPTION)
    assert listed.problem is None and listed.phrases == ("a cat", "a couch")  # repetition: each phrase once
    short = extractor.candidates(GeneratedText("a red cat", False), "A red cat.")
    assert short.problem is None and short.phrases == ("a red cat",)


def test_adapters_naming_one_model_share_its_weights_until_both_are_released(cpu_spec):
    describer = ConceptDescriber(cpu_spec("llm-concept2text", "tiny:causal-lm", max_new_tokens=4))
    extractor = LLMPhraseExtractor(cpu_spec("llm-phrases", "tiny:causal-lm", max_new_tokens=4))
    assert extractor.model is describer.model and extractor.tokenizer is not describer.tokenizer
    describer.release()
    assert extractor.extract([DESCRIPTION])[0] is not None  # still usable: the model stays while one holds it
    extractor.release()
