"""Tiny random-weight vision-language models, built from a config, saved like a hub model.

Nothing here is downloaded. A model family's test builds its model from a config with
small widths, a tokenizer trained with ``tokenizers`` on a few strings, and its processor,
then ``save_pretrained`` puts all of them into a folder that docq loads through its own
loading code (``--model THAT_FOLDER``). The answers of such a model are noise; tests check
shapes, counts and the record's form, never the answer's text.

Reusable parts for other families:
- ``train_tokenizer(special_tokens, ...)``: a byte-level BPE tokenizer (every string
  encodes, no unknown tokens) with the family's special tokens, as ``PreTrainedTokenizerFast``.
- ``CORPUS``: the strings it is trained on.
- ``save_model_folder(folder, model, *parts)``: ``save_pretrained`` of the model (safetensors)
  and of each processor / tokenizer part.
"""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "What is the total amount?",
    "What is the invoice number?",
    "What is the date of the invoice?",
    "Total due: EUR 1,157.40",
    "Invoice No: INV-20417 Date: 14 March 2024",
    "Answer with the shortest exact text as printed in the document.",
    "User: Assistant: question answer page tile overview box",
    "0123456789 ., :;-/ ()$€£%",
]

# SmolVLM's chat template (transformers' SmolVLMProcessor default): the user turn's
# content list renders its image as one <image> placeholder.
SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'] is string %}{{': ' + message['content']}}{% else %}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def train_tokenizer(
    special_tokens: list[str],
    *,
    corpus: list[str] | None = None,
    vocab_size: int = 400,
    bos_token: str | None = None,
    eos_token: str | None = None,
    pad_token: str | None = None,
    chat_template: str | None = None,
):
    """A byte-level BPE tokenizer trained on ``corpus``; ``special_tokens`` get the first ids.

    bos/eos/pad name tokens that must be in ``special_tokens``. Returns a
    ``PreTrainedTokenizerFast`` (``save_pretrained`` writes tokenizer.json and its config).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    for name in (bos_token, eos_token, pad_token):
        if name is not None and name not in special_tokens:
            raise ValueError(f"{name!r} must be one of special_tokens")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size + len(special_tokens),
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus or CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos_token,
        eos_token=eos_token,
        pad_token=pad_token,
        extra_special_tokens=[t for t in special_tokens if t not in (bos_token, eos_token, pad_token)],
    )
    if chat_template:
        fast.chat_template = chat_template
    return fast


def save_model_folder(folder: Path, model, *parts) -> Path:
    """save_pretrained the model (safetensors) and each processor/tokenizer part into folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    for part in parts:
        part.save_pretrained(folder)
    return folder


# --- Idefics3 / SmolVLM --------------------------------------------------------------------

IDEFICS3_SPECIAL = (
    ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>", "<global-img>"]
    + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
)


def idefics3_config(vocab_size: int, token_ids: dict[str, int], *, image_size: int = 64, patch_size: int = 16,
                    scale_factor: int = 2, vision_hidden: int = 32, text_hidden: int = 64, layers: int = 2):
    """An Idefics3Config with small widths; ``token_ids`` maps image/pad/eos/bos names to ids."""
    from transformers import Idefics3Config

    pad = token_ids["pad"]
    return Idefics3Config(
        image_token_id=token_ids["image"],
        scale_factor=scale_factor,
        pad_token_id=pad,
        tie_word_embeddings=False,
        vision_config={
            "hidden_size": vision_hidden,
            "intermediate_size": vision_hidden * 2,
            "num_hidden_layers": layers,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": patch_size,
        },
        text_config={
            "model_type": "llama",
            "vocab_size": vocab_size,
            "hidden_size": text_hidden,
            "intermediate_size": text_hidden * 2,
            "num_hidden_layers": layers,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "pad_token_id": pad,
            "bos_token_id": token_ids["bos"],
            "eos_token_id": token_ids["eos"],
            "tie_word_embeddings": False,
        },
    )


def build_idefics3(folder: Path, *, image_size: int = 64, patch_size: int = 16, scale_factor: int = 2,
                   seed: int = 0) -> Path:
    """A tiny random Idefics3 (SmolVLM architecture) saved into ``folder``; returns the folder.

    Its native tile is ``image_size`` pixels; each image costs
    (image_size / patch_size)^2 / scale_factor^2 image tokens (4 with the defaults).
    """
    import torch
    from transformers import Idefics3ForConditionalGeneration, Idefics3ImageProcessorPil, Idefics3Processor

    torch.manual_seed(seed)
    tokenizer = train_tokenizer(
        IDEFICS3_SPECIAL,
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|endoftext|>",
        chat_template=SMOLVLM_CHAT_TEMPLATE,
    )
    ids = {
        "image": tokenizer.convert_tokens_to_ids("<image>"),
        "pad": tokenizer.pad_token_id,
        "eos": tokenizer.eos_token_id,
        "bos": tokenizer.bos_token_id,
    }
    config = idefics3_config(len(tokenizer), ids, image_size=image_size, patch_size=patch_size,
                             scale_factor=scale_factor)
    model = Idefics3ForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids["eos"]
    model.generation_config.pad_token_id = ids["pad"]
    model.generation_config.bos_token_id = ids["bos"]
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": 4 * image_size},
        max_image_size={"longest_edge": image_size},
    )
    seq = (image_size // patch_size) ** 2 // (scale_factor**2)
    processor = Idefics3Processor(image_processor, tokenizer, image_seq_len=seq, chat_template=SMOLVLM_CHAT_TEMPLATE)
    return save_model_folder(folder, model, processor)
