"""GPU check of attn_implementation sdpa_varlen (trainer/trainer/model.py): on one
packed sequence of guanaco-like rows (Llama-2-7B's 32 heads of 128), its output
and input gradients against sdpa with the block-diagonal mask transformers
builds for packed rows, and the time of forward + backward of each.

    python bench/varlen_attention_check.py          # needs a CUDA GPU
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "trainer"))
from trainer.model import varlen_attention_forward  # noqa: E402


def lengths(total: int, seed: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    out: list[int] = []
    while sum(out) < total:
        out.append(int(torch.empty(1).log_normal_(5.7, 0.7, generator=generator).clamp(16, 2000)))
    out[-1] -= sum(out) - total
    return [n for n in out if n > 0]


class Module(torch.nn.Module):
    is_causal = True


def main() -> int:
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    module = Module().train()
    total, heads, dim = 4096, 32, 128
    worst = 0.0
    for seed in range(3):
        rows = lengths(total, seed)
        cu = torch.tensor([0, *torch.tensor(rows).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
        row_of = torch.repeat_interleave(torch.arange(len(rows), device="cuda"), torch.tensor(rows, device="cuda"))
        position = torch.arange(total, device="cuda")
        mask = (row_of[:, None] == row_of[None, :]) & (position[:, None] >= position[None, :])
        q, k, v = (
            torch.randn(1, heads, total, dim, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3)
        )
        grad = torch.randn(1, total, heads, dim, device="cuda", dtype=torch.bfloat16)
        kwargs = {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": max(rows), "max_length_k": max(rows)}

        def varlen():
            return varlen_attention_forward(module, q, k, v, None, scaling=dim**-0.5, **kwargs)[0]

        def dense():
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask[None, None], scale=dim**-0.5)
            return out.transpose(1, 2)

        results = []
        for function in (varlen, dense):
            q.grad = k.grad = v.grad = None
            out = function()
            out.backward(grad)
            results.append([out.float(), q.grad.float(), k.grad.float(), v.grad.float()])
        for name, a, b in zip(("out", "dq", "dk", "dv"), *results):
            error = ((a - b).norm() / b.norm()).item()
            worst = max(worst, error)
            print(f"seed {seed} rows {len(rows):3d} {name}: relative error {error:.2e}")
        for name, function in (("varlen", varlen), ("sdpa+mask", dense)):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            for _ in range(3):
                function().backward(grad)
            torch.cuda.synchronize()
            start.record()
            for _ in range(20):
                function().backward(grad)
            end.record()
            torch.cuda.synchronize()
            print(f"seed {seed} {name}: {start.elapsed_time(end) / 20:.2f} ms fwd+bwd per layer")
    print(f"worst relative error {worst:.2e} (bf16: expect < 1e-2)")
    return 0 if worst < 2e-2 else 1


if __name__ == "__main__":
    sys.exit(main())
