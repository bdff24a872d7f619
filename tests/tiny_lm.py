"""A tiny randomly initialised causal LM (Llama architecture, hidden 32, 2 layers) with a
byte-level BPE tokenizer trained in code and a chat template: milliseconds, no downloads."""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL = ["<|end|>", "<|system|>", "<|user|>", "<|assistant|>", "<|pad|>"]


def _corpus() -> list[str]:
    from valuedetect import templates as prompts
    from valuedetect.taxonomy import categories

    texts = [prompts.SYSTEM, prompts.PER_VALUE_QUESTION, prompts.ALL_IN_ONE_INSTRUCTION, prompts.COT_TURN2,
             "Yes No yes no Yes. No. Answer: Yes Answer: No", '{"values": []}']
    for c in categories():
        texts += [c.name, c.description, ", ".join(c.synonyms)]
    texts += ["We should ban fast food because it harms children's health. Conclusion Stance Premise in favor of"]
    return texts * 3


def tiny_causal_lm(folder: Path, layers: int = 2, hidden: int = 32, seed: int = 0, chat: bool = True) -> Path:
    """Save a tiny Llama and its tokenizer to ``folder`` and return it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    raw.train_from_iterator(_corpus(), trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|end|>", pad_token="<|pad|>")
    if chat:
        tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def tiny_language_models(root: Path) -> dict[str, Path]:
    """One tiny random model per kind the prompt detector reads (masked, seq2seq, causal), saved
    under ``root``: a BERT MLM with the tiny WordPiece vocabulary, a T5 with ByT5's file-free
    tokenizer, and the tiny Llama above."""
    import torch
    from tests.tiny_models import tiny_vocab
    from transformers import (
        BertConfig,
        BertForMaskedLM,
        BertTokenizerFast,
        ByT5Tokenizer,
        T5Config,
        T5ForConditionalGeneration,
    )

    torch.manual_seed(0)
    masked = root / "bert"
    tokenizer = BertTokenizerFast(vocab=tiny_vocab(), do_lower_case=True)
    tokenizer.save_pretrained(masked)
    BertForMaskedLM(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=2, intermediate_size=64, max_position_embeddings=512)
                    ).save_pretrained(masked)
    seq2seq = root / "t5"
    ByT5Tokenizer().save_pretrained(seq2seq)
    T5ForConditionalGeneration(T5Config(vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=2,
                                        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
                               ).save_pretrained(seq2seq)
    return {"masked": masked, "seq2seq": seq2seq, "causal": tiny_causal_lm(root / "llama", chat=False)}


def tiny_tokenizer(chat: bool = True):
    """The tiny byte-level BPE tokenizer, built in memory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    raw.train_from_iterator(_corpus(), trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|end|>", pad_token="<|pad|>")
    if chat:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


ARCHITECTURES = ("llama", "qwen2", "gemma3")


def tiny_causal_model(architecture: str, vocab_size: int, seed: int = 0, hidden: int = 32, layers: int = 2):
    """A tiny random causal LM of ``architecture`` (llama, qwen2, gemma3), built from a config:
    no files. Gemma 3 gets a sliding-window layer (window 8) beside a full one, and Qwen2 a
    bias on q/k/v, as the real models have."""
    import torch
    from transformers import (
        Gemma3ForCausalLM,
        Gemma3TextConfig,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    common = {"vocab_size": vocab_size, "hidden_size": hidden, "intermediate_size": 2 * hidden,
              "num_hidden_layers": layers, "num_attention_heads": 4, "num_key_value_heads": 2,
              "max_position_embeddings": 4096, "pad_token_id": 0}
    torch.manual_seed(seed)
    if architecture == "llama":
        return LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=False)).eval()
    if architecture == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=True)).eval()
    if architecture == "gemma3":
        config = Gemma3TextConfig(**common, head_dim=8, sliding_window=8,
                                  layer_types=["sliding_attention", "full_attention"][:layers])
        return Gemma3ForCausalLM(config).eval()
    raise ValueError(architecture)
