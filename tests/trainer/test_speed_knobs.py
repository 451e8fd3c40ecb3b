"""The fast recipe's own speed knobs, on the CPU, in the trainer's venv:
`attn_implementation: sdpa_varlen` loads and computes what sdpa computes (on the
CPU it is sdpa; bench/varlen_attention_check.py checks the GPU kernel), and
`gradient_checkpointing_skip_last` turns checkpointing off on the last blocks only."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TRAINER_PYTHON = ROOT / ".venv" / "trainer" / "bin" / "python"

SCRIPT = r"""
import json
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.modeling_layers import GradientCheckpointingLayer
from trainer import model as model_module, recipe

model_module.register_varlen_attention()
config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=100, bos_token_id=1, eos_token_id=2)
torch.manual_seed(0)
reference = LlamaForCausalLM._from_config(config, attn_implementation="sdpa").eval()
varlen = LlamaForCausalLM._from_config(config, attn_implementation="sdpa_varlen").eval()
varlen.load_state_dict(reference.state_dict())
ids = torch.randint(3, 100, (1, 12))
positions = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2, 3]])
cu = torch.tensor([0, 5, 8, 12], dtype=torch.int32)
packed = dict(input_ids=ids, position_ids=positions, cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=5, max_length_k=5)
with torch.no_grad():
    difference = (varlen(**packed).logits - reference(input_ids=ids, position_ids=positions).logits).abs().max().item()

varlen.train()
varlen.gradient_checkpointing_enable()
recipe.skip_checkpointing_callback(1).on_train_begin(None, None, None, model=varlen)
flags = [m.gradient_checkpointing for m in varlen.modules() if isinstance(m, GradientCheckpointingLayer)]
print(json.dumps({"implementation": varlen.config._attn_implementation, "difference": difference, "flags": flags}))
"""


def test_varlen_attention_and_partial_checkpointing_on_the_cpu(tmp_path):
    result = subprocess.run(
        [str(TRAINER_PYTHON), "-c", SCRIPT], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["implementation"] == "sdpa_varlen", report
    assert report["difference"] < 1e-5, report  # packed rows: the same logits as sdpa's block-diagonal mask
    assert report["flags"] == [True, True, False], report  # only the last block keeps its activations
