"""Image + question + answer triples from the `easy-vqa` package (MIT) as
vision chat rows, for the CPU vision config and the tests (no Hub here).

The package ships 64x64 PNGs of one coloured shape each (4,000 train, 1,000
test) and short questions about them ("what color is the shape?" → "blue").
Each triple becomes one row in the format TRL trains vision models on:
`{"messages": [user question, assistant answer], "images": [png path]}`; TRL
puts the image before the question in the first user turn.
"""

from __future__ import annotations

import importlib.util

PREFIX = "easy-vqa:"
SPLITS = ("train", "test")


class EasyVqaError(ValueError):
    pass


def load_rows(split: str) -> list[dict]:
    """The rows of one split, in the package's order."""
    if split not in SPLITS:
        raise EasyVqaError(f"easy-vqa has the splits {', '.join(SPLITS)}, not {split!r} (e.g. easy-vqa:train)")
    if importlib.util.find_spec("easy_vqa") is None:
        raise EasyVqaError("package easy-vqa is not installed: pip install easy-vqa==1.0")
    import easy_vqa

    questions, answers, image_ids = getattr(easy_vqa, f"get_{split}_questions")()
    image_paths = getattr(easy_vqa, f"get_{split}_image_paths")()
    return [
        {
            "messages": [
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ],
            "images": [image_paths[image_id]],
        }
        for question, answer, image_id in zip(questions, answers, image_ids)
    ]
