"""The roles of the SynGround pipeline, one interface each.

Assets depend on these interfaces, never on a model class. An adapter plays one role: the
procedural shapes world (`tiny/shapes.py`) or a transformers/diffusers model loaded with
`from_pretrained` (`adapters/hf_*.py`). Every call is batched: it takes a list of items and returns one
result per item, in order.

Box format: `box_xyxy` = (x0, y0, x1, y1) in pixels of the image it belongs to, x1/y1 exclusive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from PIL import Image


@dataclass(frozen=True)
class SourceItem:
    """What a description is made from: one row of the `concepts` asset.

    Concept2Text fills `concepts`; Image2Text fills `source_image` (a path to a real image);
    Text2Text and Concatenation fill `source_captions`.
    """

    item_id: str
    seed: int
    concepts: tuple[str, ...] = ()
    source_image: str | None = None
    source_captions: tuple[str, ...] = ()


@dataclass(frozen=True)
class GeneratedText:
    """A describer's output: the text, and whether decoding stopped because it hit `max_new_tokens`
    (rather than at an end-of-sequence token), so a finished sentence can be told from one cut
    mid-word without a tokenizer."""

    text: str
    hit_token_limit: bool = False


@dataclass(frozen=True)
class PhraseCandidates:
    """A phrase extractor's candidates for one description, with what the answer check found:
    `problem` (an empty answer or a refusal: nothing to parse) and `cut_off` (the last phrase of an
    answer cut at the token limit, taken out of `phrases` because it may end mid-word)."""

    phrases: tuple[str, ...]
    problem: str | None = None
    cut_off: str | None = None


@dataclass
class GeneratedImage:
    """An image generator's output. `layout` is set only by layout-to-image generators (GLIGEN):
    the (phrase, box_xyxy) pairs the image was conditioned on, which then are the boxes."""

    image: Image.Image
    layout: list[tuple[str, tuple[float, float, float, float]]] | None = None
    # Procedural worlds know the true (phrase, box_xyxy) of what they drew: kept as an evaluation
    # oracle (tests, the held-out shapes benchmark), never used as training boxes.
    ground_truth: list[tuple[str, tuple[float, float, float, float]]] | None = None
    # True when the generator's own safety checker flagged the image (diffusers'
    # `nsfw_content_detected`); such an image is blacked out and must not be published.
    flagged: bool = False


@dataclass(frozen=True)
class Detection:
    phrase_index: int
    box_xyxy: tuple[float, float, float, float]
    score: float


@dataclass
class AdapterInfo:
    """Who made an output: goes into lineage and asset metadata."""

    adapter: str
    model_id: str
    revision: str = ""
    settings: dict = field(default_factory=dict)


# Every adapter names the Protocol of the role it plays as a base class (`class ShapesDetector(Detector)`),
# so a type checker holds it to the role's signature; `ROLE_PROTOCOLS` maps a recipe's role names to them.


class Role(Protocol):
    info: AdapterInfo


class SourceSampler(Role, Protocol):
    def sample(self, item_ids: Sequence[str], seeds: Sequence[int]) -> list[SourceItem]: ...


class Describer(Role, Protocol):
    def describe(self, items: Sequence[SourceItem]) -> list[GeneratedText]: ...


class ImageGenerator(Role, Protocol):
    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[GeneratedImage]: ...


class PhraseExtractor(Role, Protocol):
    def extract(self, descriptions: Sequence[str]) -> list[PhraseCandidates]:
        """Candidate phrases per description; `phrases.filter_phrases` then keeps the valid ones."""
        ...


class Detector(Role, Protocol):
    def detect(
        self, images: Sequence[Image.Image], phrases: Sequence[Sequence[str]]
    ) -> list[list[Detection]]:
        """Boxes for each image's phrases; a phrase may get no detection."""
        ...


ROLE_PROTOCOLS: dict[str, type[Role]] = {
    "concepts": SourceSampler, "describer": Describer, "image_generator": ImageGenerator,
    "phrase_extractor": PhraseExtractor, "detector": Detector,
}
ROLE_NAMES = tuple(ROLE_PROTOCOLS)


class Verifier(Role, Protocol):
    """A judge of box crops (quality.verify): (P(yes), P(no)) of each crop showing its phrase."""

    def __call__(self, crops: Sequence[Image.Image], phrases: Sequence[str]) -> list[tuple[float, float]]: ...


# Roles a recipe's quality filters load (not every recipe names them, so they are not in ROLE_NAMES).
FILTER_ROLE_PROTOCOLS: dict[str, type[Role]] = {"verifier": Verifier}


class RoleProvider(Protocol):
    """What the stages (`pipeline/*`) ask for the models that play a recipe's roles: the model suite
    (`adapters/suite.py`), or a test's own provider. Each method returns the adapter for a recipe,
    built once per process by the suite.

    `recipe` is a `recipes.Recipe`; `agreement`/`verify` are `quality.settings` values; a grounding
    model is a `grounding.model.GroundingModel`. They are named here, not imported: this contract
    sits below every one of those modules."""

    def concepts(self, recipe_name: str) -> SourceSampler: ...

    def describer(self, recipe_name: str) -> Describer: ...

    def image_generator(self, recipe_name: str) -> ImageGenerator: ...

    def phrase_extractor(self, recipe_name: str) -> PhraseExtractor: ...

    def detector(self, recipe_name: str) -> Detector: ...

    def detectors(self, recipe: Any) -> list[tuple[str, Detector]]: ...

    def agreement_model(self, recipe_name: str, agreement: Any) -> Any: ...

    def verifier(self, recipe_name: str, verify: Any) -> Verifier: ...
