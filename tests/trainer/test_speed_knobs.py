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


COMPILE_SCRIPT = r"""
import json
import torch
from transformers import BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM
from peft import LoraConfig, get_peft_model
from trainer import model as model_module, recipe

model_module.register_varlen_attention()
config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=100, bos_token_id=1, eos_token_id=2)
torch.manual_seed(0)
LlamaForCausalLM._from_config(config, dtype=torch.float32).save_pretrained("tiny")
ids = torch.randint(3, 100, (1, 12))
positions = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2, 3]])
cu = torch.tensor([0, 5, 8, 12], dtype=torch.int32)
batch = dict(input_ids=ids, position_ids=positions, cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=5,
             max_length_k=5, labels=ids)


def train_step(compiled):
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                      bnb_4bit_compute_dtype=torch.float32, bnb_4bit_use_double_quant=True)
    model = LlamaForCausalLM.from_pretrained("tiny", quantization_config=quantization, dtype=torch.float32,
                                             device_map={"": "cpu"}, attn_implementation="sdpa_varlen")
    model.config.use_cache = False
    torch.manual_seed(1)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=4, target_modules="all-linear", lora_dropout=0.0))
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # PEFT starts B at zero: give every adapter weight a gradient
            torch.nn.init.normal_(parameter, std=0.02)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    count = recipe.compile_decoder_layers(model, backend="aot_eager") if compiled else 0
    wrapped = [getattr(m, "_compiled_call_impl", None) is not None for m in model.base_model.model.model.layers]
    model.train()
    loss = model(**batch).loss
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    return loss.item(), grads, count, wrapped


loss, grads, _, _ = train_step(False)
compiled_loss, compiled_grads, count, wrapped = train_step(True)
error = max(((grads[k] - compiled_grads[k]).norm() / grads[k].norm()).item() for k in grads)
print(json.dumps({"count": count, "wrapped": wrapped, "loss": [loss, compiled_loss], "grads": [len(grads),
                  len(compiled_grads)], "error": error}))
"""


def test_compiled_decoder_layers_train_as_the_eager_ones_on_a_4bit_base(tmp_path):
    """compile_layers: every decoder block is torch.compile'd in place (here with
    the aot_eager backend, which traces through bitsandbytes' nf4 matmul, PEFT's
    LoRA and gradient checkpointing exactly as inductor does, without the CPU
    code generation), and one training step gives the eager step's loss and
    adapter gradients."""
    result = subprocess.run(
        [str(TRAINER_PYTHON), "-c", COMPILE_SCRIPT], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["count"] == 3 and report["wrapped"] == [True, True, True], report
    assert abs(report["loss"][0] - report["loss"][1]) < 1e-5, report
    assert report["grads"][0] == report["grads"][1] == 3 * 7 * 2, report  # A and B of 7 linears in 3 blocks
    assert report["error"] < 1e-4, report
