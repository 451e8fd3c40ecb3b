"""QLoRA fine-tuning job: `python -m trainer --config FILE [--key value ...]`.

Writes one adapter folder per run under ADAPTERS_DIR (docs/adapters.md).
Importing this package does no work: the heavy libraries (torch, transformers,
TRL) are imported only by the modules that train.
"""

__version__ = "0.1.0"
