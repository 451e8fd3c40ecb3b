"""Turns a conversation into model inputs: through the tokenizer's chat template
for text models, through the processor's (template + images) for vision models.

Both prompters give the same thing back, a dict of tensors for generate(), so
the backend does not care which kind of model it runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..domain import ChatMessage
from ..images import prepare_image

# Images per message, by model family (config.model_type). Llama 3.2 Vision was
# trained with one image per conversation turn and Ollama enforces one, so the
# same limit holds here; families that interleave several images take a few.
MAX_IMAGES_PER_MESSAGE = {"mllama": 1}
DEFAULT_MAX_IMAGES_PER_MESSAGE = 4
# Used when the image processor's configuration says nothing usable.
FALLBACK_LONG_SIDE = 2048


class TextPrompter:
    vision = False
    max_images_per_message = 0

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def encode(self, messages: Sequence[ChatMessage]) -> dict:
        conversation = [{"role": m.role.value, "content": m.text} for m in messages]
        return self.tokenizer.apply_chat_template(conversation, add_generation_prompt=True,
                                                  return_tensors="pt", return_dict=True)


class VisionPrompter:
    vision = True

    def __init__(self, processor, family: str) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.max_images_per_message = MAX_IMAGES_PER_MESSAGE.get(family, DEFAULT_MAX_IMAGES_PER_MESSAGE)
        self.max_long_side, self.max_pixels = image_budget(processor.image_processor)

    def encode(self, messages: Sequence[ChatMessage]) -> dict:
        conversation, images = [], []
        for index, message in enumerate(messages):
            # Images first, then the text: the order the families' own examples use.
            content = [{"type": "image"} for _ in message.images]
            if message.text:
                content.append({"type": "text", "text": message.text})
            conversation.append({"role": message.role.value, "content": content})
            images += [prepare_image(data, self.max_long_side, self.max_pixels, f"messages[{index}].images[{n}]")
                       for n, data in enumerate(message.images)]
        prompt = self.processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        kwargs = {"images": [images]} if images else {}
        # The template already wrote the BOS token where the model wants it.
        return dict(self.processor(text=[prompt], add_special_tokens=False, return_tensors="pt", **kwargs))


def image_budget(image_processor) -> tuple[int | None, int | None]:
    """(longest side, pixel count) beyond which the processor would only shrink
    the image again, read from its configuration."""
    size = getattr(image_processor, "size", None)
    tiles = getattr(image_processor, "max_image_tiles", None)
    if tiles and _get(size, "height"):
        # Mllama: tiles of size.height, up to max_image_tiles of them; the largest
        # square canvas is sqrt(tiles) tiles a side (2 x 560 = 1120 px for 4 tiles).
        return _get(size, "height") * max(1, math.isqrt(tiles)), None
    if hasattr(image_processor, "merge_size"):
        # Qwen2-VL family: a budget of pixels (size.longest_edge counts pixels there).
        pixels = getattr(image_processor, "max_pixels", None) or _get(size, "longest_edge")
        return None, pixels
    if longest := _get(size, "longest_edge"):
        return longest, None  # Idefics3 / SmolVLM: the long side is resized to this
    if (height := _get(size, "height")) and (width := _get(size, "width")):
        return max(height, width), None
    return FALLBACK_LONG_SIDE, None


def _get(size, key: str) -> int | None:
    if size is None:
        return None
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return int(value) if value else None
