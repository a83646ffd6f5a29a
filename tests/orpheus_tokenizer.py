"""A small real tokenizer in the Orpheus layout, made offline for the template tests.

A byte-level BPE trained on the demo transcripts with the `tokenizers` library, its vocabulary
grown to 156,938 entries (what template=orpheus writes at most, plus one) with Llama-3's BOS at
128000 and end-of-text at 128009, saved with `PreTrainedTokenizerFast.save_pretrained`, so
`template.tokenizer=<dir>` runs the real `AutoTokenizer.from_pretrained` path.
"""

from __future__ import annotations

import json
from pathlib import Path

from helpers import demo_rows

BOS, EOT = "<|begin_of_text|>", "<|eot_id|>"
SIZE = 156_938


def make_tokenizer(directory: Path, size: int = SIZE) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    base = Tokenizer(models.BPE())
    base.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    base.train_from_iterator([r["text"] for r in demo_rows()], trainer)
    spec = json.loads(base.to_str())
    vocab = spec["model"]["vocab"]
    named = {128000: BOS, 128009: EOT}
    for i in range(len(vocab), size):  # Llama-3's reserved and Orpheus's custom tokens
        vocab[named.get(i, f"<custom_token_{i}>")] = i
    tokenizer = Tokenizer.from_str(json.dumps(spec))
    tokenizer.add_special_tokens([BOS, EOT])
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, 128000)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOT)
    fast.save_pretrained(directory)
    return directory
