"""Greedy generations for a few fixed prompts (text data) or held-out rows
(vision data: image + question), with the adapter off (the base model:
"before") and on ("after"), so the manifest shows what training changed."""

from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str, template: str, use_chat_template: bool) -> Any:
    if template:
        text = template.format(prompt=prompt)
    elif use_chat_template and tokenizer.chat_template:
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_dict=True, return_tensors="pt"
        )
    else:
        text = prompt
    # A template that writes the BOS token itself (the seed's "<s>[INST] ...") must not get a second one.
    add_special = not (tokenizer.bos_token and text.startswith(tokenizer.bos_token))
    return tokenizer(text, return_tensors="pt", add_special_tokens=add_special)


def generate(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    *,
    template: str,
    use_chat_template: bool,
    max_new_tokens: int,
    adapter: bool,
) -> list[str]:
    encoded = [encode_prompt(tokenizer, prompt, template, use_chat_template) for prompt in prompts]
    return _greedy(model, tokenizer, encoded, max_new_tokens=max_new_tokens, adapter=adapter)


def question_of(row: dict) -> list[dict]:
    """A vision row's turns up to its first answer: what the model is asked."""
    messages = row["messages"]
    first_answer = next((i for i, message in enumerate(messages) if message["role"] == "assistant"), len(messages))
    return messages[:first_answer]


def images_of(row: dict) -> list:
    """A vision row's images: its `images` list, or its one `image`."""
    if row.get("images") is not None:
        return row["images"]
    return [row["image"]] if row.get("image") is not None else []


def describe_row(row: dict) -> dict[str, str]:
    """The question's text, the row's first image (path when it has one) and the dataset's answer."""
    text = " ".join(_texts(message["content"]) for message in question_of(row) if message["role"] == "user")
    images = images_of(row)
    first = images[0] if images else None
    image = (first.get("path") if isinstance(first, dict) else None) or ("(embedded)" if first else "")
    answer = next((_texts(m["content"]) for m in row["messages"] if m["role"] == "assistant"), "")
    return {"prompt": text, "image": image or "", "reference": answer}


def _texts(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(part.get("text") or "" for part in content if part.get("type") == "text")


def encode_row(processor: Any, row: dict) -> Any:
    """A vision row's question with its images, through the processor's chat template."""
    from trl.data_utils import prepare_multimodal_messages

    messages = prepare_multimodal_messages(question_of(row), images=images_of(row))
    return processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )


def generate_for_rows(model: Any, processor: Any, rows: list[dict], *, max_new_tokens: int, adapter: bool) -> list[str]:
    """Greedy answers of a vision model to the questions (and images) of dataset rows."""
    encoded = [encode_row(processor, row) for row in rows]
    return _greedy(model, processor.tokenizer, encoded, max_new_tokens=max_new_tokens, adapter=adapter)


def _greedy(model: Any, tokenizer: Any, encoded: list[Any], *, max_new_tokens: int, adapter: bool) -> list[str]:
    import torch

    if not encoded or max_new_tokens == 0:
        return ["" for _ in encoded]
    was_training = model.training
    model.eval()
    answers = []
    switch = nullcontext() if adapter else model.disable_adapter()
    try:
        with switch, torch.inference_mode():
            for inputs in encoded:
                # Pixel values follow the model's floating dtype; token ids stay integers.
                if "pixel_values" in inputs:
                    inputs = inputs.to(model.device, dtype=model.dtype)
                else:
                    inputs = inputs.to(model.device)
                output = model.generate(
                    **inputs,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    use_cache=True,
                    pad_token_id=tokenizer.pad_token_id,
                )
                new_tokens = output[0][inputs["input_ids"].shape[1] :]
                answers.append(tokenizer.decode(new_tokens, skip_special_tokens=True).strip())
    finally:
        model.train(was_training)
    return answers
