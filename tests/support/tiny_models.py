"""Builds small vision-language checkpoints for the chat service's tests.

No vision-language weights can be fetched here (docs: DESIGN §4), so the tests
build models from the real configurations of two families and save them like
a Hugging Face checkpoint; the chat service then loads them through the same
code that loads SmolVLM or Llama 3.2 Vision by name on a server:

- ``idefics3``: SmolVLM-256M-Instruct's configuration (Idefics3 architecture,
  SigLIP 512 px / patch 16 vision shape, pixel-shuffle scale 4, 64 image tokens
  per 512 px tile, images resized to 2048 px and split into tiles) with the real
  SmolLM2-135M-Instruct text weights and tokenizer (the embedded model, with
  SmolVLM's 128 added tokens at their real ids) and SmolVLM's chat template.
  Only the vision tower and connector are random, and narrowed (width 64,
  2 layers) so that a dozen tiles encode in milliseconds on a laptop CPU.
- ``mllama``: Llama-3.2-11B-Vision-Instruct's image processor (560 px tiles,
  up to 4) and model structure (tiled vision encoder with global layers and
  intermediate-layer features, cross-attention text layers, llama3 RoPE),
  narrowed to a few layers of width 64, all random. Llama 3's tokenizer ships
  in no package, so the SmolLM2 tokenizer stands in, with Llama 3's special
  tokens added and the structure of its chat template.

Runs in the chat service's virtualenv (it needs torch and transformers)::

    .venv/chat/bin/python tests/support/tiny_models.py OUTDIR --family idefics3

Deterministic: the same command writes the same weights.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# SmolVLM's chat template (Idefics3 format): "User:<image>text<end_of_utterance>\nAssistant:".
IDEFICS3_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# The structure of Llama 3.2 Vision's template (headers, <|image|> before the
# text, <|eot_id|> after each turn), without its tool-calling branches.
MLLAMA_CHAT_TEMPLATE = (
    "{{- bos_token }}{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}{%- else %}"
    "{%- for content in message['content'] %}{%- if content['type'] == 'image' %}{{- '<|image|>' }}"
    "{%- elif content['type'] == 'text' %}{{- content['text'] }}{%- endif %}{%- endfor %}{%- endif %}"
    "{{- '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

# SmolVLM's added tokens, in id order from 49152: <global-img>, the 36 tile
# position tags, <fake_token_around_image> (49189), <image> (49190), reserved
# tokens, and <end_of_utterance> (49279), for a vocabulary of 49280.
SMOLVLM_VOCAB = 49280


def smolvlm_added_tokens() -> list[str]:
    tokens = ["<global-img>"] + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    tokens += ["<fake_token_around_image>", "<image>"]
    reserved = SMOLVLM_VOCAB - 49152 - len(tokens) - 1
    tokens += [f"<|reserved_special_token_{i}|>" for i in range(reserved)]
    return tokens + ["<end_of_utterance>"]


def smollm2_folder(models_dir: Path) -> Path:
    sys.path.insert(0, str(REPO / "vision-chat-service"))
    from vision_chat_service import embedded_model

    return embedded_model.provision(models_dir)


def build_idefics3(out: Path, models_dir: Path) -> None:
    import torch
    from transformers import (AutoModelForCausalLM, AutoTokenizer, Idefics3Config,
                              Idefics3ForConditionalGeneration, Idefics3ImageProcessorPil, Idefics3Processor)

    torch.manual_seed(0)  # the new vocabulary rows and the vision part are random, but repeatable
    source = smollm2_folder(models_dir)
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.add_special_tokens({"additional_special_tokens": smolvlm_added_tokens()})
    assert len(tokenizer) == SMOLVLM_VOCAB, len(tokenizer)
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    end_of_utterance = tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    assert (image_token_id, end_of_utterance) == (49190, 49279)

    text = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    text_config = {k: v for k, v in text.config.to_dict().items()
                   if k not in ("quantization_config", "architectures", "_name_or_path", "_model_name_or_path")}
    text_config.update(vocab_size=SMOLVLM_VOCAB, pad_token_id=2)
    config = Idefics3Config(
        text_config=text_config,
        # SigLIP-base-patch16-512's geometry; width and depth narrowed (real: 768 wide, 12 layers).
        vision_config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "image_size": 512, "patch_size": 16},
        scale_factor=4, image_token_id=image_token_id, tie_word_embeddings=False,
    )
    model = Idefics3ForConditionalGeneration(config)
    # Real text weights; the 128 added rows keep their random initialisation.
    text.resize_token_embeddings(SMOLVLM_VOCAB)
    model.model.text_model.load_state_dict(text.model.state_dict())
    model.lm_head.weight.data.copy_(text.get_output_embeddings().weight.data)
    model.generation_config.eos_token_id = [end_of_utterance, tokenizer.convert_tokens_to_ids("<|im_end|>")]
    model.generation_config.pad_token_id = 2
    model.to(torch.bfloat16).save_pretrained(out)

    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=True, size={"longest_edge": 2048}, max_image_size={"longest_edge": 512},
        resample=1, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                  image_seq_len=64, chat_template=IDEFICS3_CHAT_TEMPLATE)
    processor.save_pretrained(out)


def build_mllama(out: Path, models_dir: Path) -> None:
    import torch
    from transformers import (AutoTokenizer, MllamaConfig, MllamaForConditionalGeneration,
                              MllamaImageProcessorPil, MllamaProcessor)

    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder(models_dir))
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>", "<|start_header_id|>",
                "<|end_header_id|>", "<|eot_id|>", "<|python_tag|>", "<|image|>"]
    tokenizer.add_special_tokens({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
                                  "pad_token": "<|finetune_right_pad_id|>",
                                  "additional_special_tokens": specials})
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in specials}
    vocab = len(tokenizer)
    config = MllamaConfig(
        # Llama 3.2 Vision's text structure (llama3 RoPE, 128k positions, a
        # cross-attention layer among self-attention ones), narrowed: real 40
        # layers of 4096 with cross-attention at 3, 8, ..., 38.
        text_config={"vocab_size": vocab, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 5,
                     "num_attention_heads": 4, "num_key_value_heads": 2, "cross_attention_layers": [3],
                     "max_position_embeddings": 131072,
                     "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                         "original_max_position_embeddings": 8192},
                     "bos_token_id": ids["<|begin_of_text|>"], "eos_token_id": ids["<|eot_id|>"],
                     "pad_token_id": ids["<|finetune_right_pad_id|>"]},
        # Real tile geometry (560 px, patch 14, up to 4 tiles); real width 1280,
        # 32 + 8 global layers, features from 5 intermediate layers (7680 = 1280 x 6).
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_global_layers": 1,
                       "attention_heads": 2, "image_size": 560, "patch_size": 14, "max_num_tiles": 4,
                       "intermediate_layers_indices": [0, 1], "vision_output_dim": 96},
        image_token_index=ids["<|image|>"],
    )
    torch.manual_seed(0)
    model = MllamaForConditionalGeneration(config)
    model.generation_config.eos_token_id = [ids["<|eot_id|>"], ids["<|end_of_text|>"]]
    model.generation_config.pad_token_id = ids["<|finetune_right_pad_id|>"]
    model.to(torch.bfloat16).save_pretrained(out)

    image_processor = MllamaImageProcessorPil(
        size={"height": 560, "width": 560}, max_image_tiles=4, resample=2,
        image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711])
    MllamaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                    chat_template=MLLAMA_CHAT_TEMPLATE).save_pretrained(out)


def build_lora(out: Path, models_dir: Path, seed: int, base_model: str) -> None:
    """A LoRA adapter for the embedded SmolLM2 in the trainer's folder layout
    (docs/adapters.md). Its weights are random (init_lora_weights=False: PEFT's
    default initialisation is a no-op adapter), so it visibly changes answers,
    and differently for each seed."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = smollm2_folder(models_dir)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    torch.manual_seed(seed)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM",
                        init_lora_weights=False)
    adapter = get_peft_model(model, config)
    adapter.save_pretrained(out)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    manifest = {"format_version": 1, "name": out.name, "kind": "lora", "task": "text", "base_model": base_model,
                "created": "2026-01-01T00:00:00Z", "hyperparameters": {"r": 8, "lora_alpha": 16, "seed": seed}}
    # Written last, as the trainer does: until it exists the folder is incomplete.
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


BUILDERS = {"idefics3": build_idefics3, "mllama": build_mllama}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write the checkpoint (or adapter) into")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--family", choices=sorted(BUILDERS), help="a tiny vision-language model")
    what.add_argument("--lora-seed", type=int, help="a random LoRA adapter on the embedded SmolLM2, "
                                                    "named after OUT's last folder")
    parser.add_argument("--base-model", default="smollm2-135m-instruct", help="base_model in the adapter's manifest")
    parser.add_argument("--models-dir", type=Path, default=REPO / ".cache" / "models",
                        help="where the embedded SmolLM2 checkpoint is (or is provisioned)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.lora_seed is not None:
        build_lora(args.out, args.models_dir, args.lora_seed, args.base_model)
        print(f"wrote a LoRA adapter to {args.out}")
        return 0
    BUILDERS[args.family](args.out, args.models_dir)
    (args.out / "tiny_model.json").write_text(json.dumps({"family": args.family}) + "\n")
    print(f"wrote a tiny {args.family} model to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
