"""Greedy generations for a few fixed prompts, with the adapter off (the base
model: "before") and on ("after"), so the manifest shows what training changed."""

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
    import torch

    if not prompts or max_new_tokens == 0:
        return ["" for _ in prompts]
    was_training = model.training
    model.eval()
    answers = []
    switch = nullcontext() if adapter else model.disable_adapter()
    try:
        with switch, torch.inference_mode():
            for prompt in prompts:
                inputs = encode_prompt(tokenizer, prompt, template, use_chat_template).to(model.device)
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
