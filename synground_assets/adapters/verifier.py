"""Crop verifiers, the judges of `quality.verify` (quality/verify.py): given crops and their phrases,
(P(yes), P(no)) per crop.

- `VLMVerifier`: any `AutoModelForImageTextToText` chat model (LLaVA, LLaVA-NeXT, Qwen2-VL / Qwen2.5-VL,
  Idefics3 ...; the image-text-to-text models the `image-captioner` describer runs) is asked the
  question about each crop, with the chat template and generation prompt; one forward pass, no
  generation. P(yes) is the next-token probability summed over the yes words' tokens (Yes, yes,
  YES), P(no) over the no words' (No, no, NO), as ROVI does (CihangPeng/ROVI@3615aa1,
  vlm_cross_checking/cross_checking.py:85, :181-182). Where a word is several tokens, its first
  token stands for it (what the model must emit first to say it).
- `ItmVerifier`: a grounding model's ITM head on the crop: P(yes) = P(match), P(no) = 1 - P(match).

Both run their crops in the batches they are given (quality/verify.py batches them).
"""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image

from synground_assets.adapters.hf_common import (
    ModelAdapter,
)
from synground_assets.adapters.loading import ModelLoadError
from synground_assets.roles.base import Verifier
from synground_assets.roles.spec import RoleSpec

YES_WORDS = ("Yes", "yes", "YES")
NO_WORDS = ("No", "no", "NO")


def answer_token_ids(tokenizer, words: Sequence[str]) -> list[int]:
    """The first token of each word as the answer would begin (no special tokens), deduplicated."""
    ids: list[int] = []
    for word in words:
        encoded = tokenizer.encode(word, add_special_tokens=False)
        if encoded and encoded[0] not in ids:
            ids.append(encoded[0])
    return ids


class VLMVerifier(ModelAdapter, Verifier):
    """A VLM asked `question` (with `{phrase}`) about each crop; see the module docstring."""

    role = "verifier"

    def __init__(self, spec: RoleSpec, question: str):
        super().__init__(spec)
        # Left padding: the last position of every row is its prompt's last token, whose logits we read.
        self.kind, self.processor, self.model = self.load_image_text_to_text(
            "the verifier asks a question, so it needs an instruction-tuned (chat) VLM")
        self.question = question
        tokenizer = self.processor.tokenizer
        self.yes_ids, self.no_ids = answer_token_ids(tokenizer, YES_WORDS), answer_token_ids(tokenizer, NO_WORDS)
        if not self.yes_ids or not self.no_ids or set(self.yes_ids) & set(self.no_ids):
            raise ModelLoadError(f"role {self.role!r}: the tokenizer of {spec.model!r} does not tell yes from no "
                                 f"(yes tokens {self.yes_ids}, no tokens {self.no_ids}); a VLM whose vocabulary "
                                 "has no yes or no word cannot answer the question (a tiny: model built by an older "
                                 "version: delete its folder to rebuild it)")
        self.info.settings |= {"question": question, "yes_tokens": self.yes_ids, "no_tokens": self.no_ids}

    def prompts(self, phrases: Sequence[str]) -> list[str]:
        return [self.processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"},
                                          {"type": "text", "text": self.question.format(phrase=phrase)}]}],
            add_generation_prompt=True) for phrase in phrases]

    @torch.inference_mode()
    def __call__(self, crops: Sequence[Image.Image], phrases: Sequence[str]) -> list[tuple[float, float]]:
        if not crops:
            return []
        inputs = self.processor(images=[[crop.convert("RGB")] for crop in crops], text=self.prompts(phrases),
                                return_tensors="pt", padding=True).to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        logits = self.model(**inputs, use_cache=False).logits[:, -1, :].float()  # (B, vocab)
        probabilities = logits.softmax(dim=-1).cpu()
        p_yes = probabilities[:, self.yes_ids].sum(dim=-1)
        p_no = probabilities[:, self.no_ids].sum(dim=-1)
        return [(float(y), float(n)) for y, n in zip(p_yes, p_no)]


class ItmVerifier:
    """A grounding model's ITM head judging each (crop, phrase) pair."""

    def __init__(self, model):
        self.model = model
        self.info = getattr(model, "info", None)

    @property
    def device(self):
        return self.model.device

    @torch.no_grad()
    def __call__(self, crops: Sequence[Image.Image], phrases: Sequence[str]) -> list[tuple[float, float]]:
        if not crops:
            return []
        was_training = self.model.training
        self.model.eval()
        try:
            inputs = self.model.preprocess([crop.convert("RGB") for crop in crops], list(phrases))
            image_embeds = self.model.encode_image(inputs.pixel_values)
            logits, _ = self.model.itm_logits(image_embeds, inputs.input_ids, inputs.attention_mask)
            match = logits.float().softmax(dim=-1)[:, 1].cpu()
        finally:
            self.model.train(was_training)
        return [(float(p), 1.0 - float(p)) for p in match]

    def release(self) -> None:
        """Off the GPU (a grounding model has no `release` of its own); the suite sits above this
        module, so its `release` helper is not imported here."""
        self.model.to("cpu")
        torch.cuda.empty_cache()
