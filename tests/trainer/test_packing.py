"""The fast recipe packs rows into one sequence: a packed row must see only
itself. Checked through the recipe's own SFTTrainer (its collator and the
attention it configures) on a tiny random Llama, in the trainer's venv."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TRAINER_PYTHON = ROOT / ".venv" / "trainer" / "bin" / "python"

SCRIPT = r"""
import json, sys, tempfile
from pathlib import Path
import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from tokenizers import Tokenizer, models, pre_tokenizers
from trainer import argparsing, recipe

vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i + 3 for i in range(97)}}
backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
tokenizer.pad_token = tokenizer.eos_token
torch.manual_seed(0)
model = LlamaForCausalLM._from_config(
    LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=4, vocab_size=100, bos_token_id=1, eos_token_id=2),
    attn_implementation="sdpa",
)
rows = ["w1 w2 w3 w4 w5 w6 w7", "w9 w8 w7 w6 w5"]
scratch = Path(tempfile.mkdtemp())
config = argparsing.parse([
    "--config", sys.argv[1], "--base_model", "unused", "--adapters_dir", str(scratch),
    "--use_cpu", "--bf16", "false", "--optim", "adamw_torch", "--dataloader_num_workers", "0",
    "--per_device_train_batch_size", "2", "--report_to", "none", "--max_length", "64",
    "--quantization", "none", "--compute_dtype", "float32",
])
trainer = recipe.build_trainer(config, model, tokenizer, Dataset.from_dict({"text": rows}), None, scratch / "run")
batch = next(iter(trainer.get_train_dataloader()))
ids, positions = batch["input_ids"], batch["position_ids"]
model = trainer.model.eval()
with torch.no_grad():
    packed = model(input_ids=ids, position_ids=positions, use_cache=False).logits[0]
    starts = (positions[0] == 0).nonzero().flatten().tolist() + [ids.shape[1]]
    worst = 0.0
    for start, end in zip(starts, starts[1:]):
        alone = model(input_ids=ids[:, start:end], use_cache=False).logits[0]
        worst = max(worst, (packed[start:end] - alone).abs().max().item())
print(json.dumps({"shape": list(ids.shape), "has_mask": "attention_mask" in batch, "rows": len(starts) - 1, "worst": worst}))
"""


def test_packed_rows_of_the_fast_recipe_do_not_attend_to_each_other(tmp_path):
    result = subprocess.run(
        [str(TRAINER_PYTHON), "-c", SCRIPT, str(ROOT / "trainer" / "configs" / "fast-llama2-guanaco.yaml")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["shape"][0] == 1 and report["rows"] == 2, report  # both rows flattened into one sequence
    assert not report["has_mask"], report  # padding-free: no padding, boundaries come from position_ids
    assert report["worst"] < 1e-4, report
