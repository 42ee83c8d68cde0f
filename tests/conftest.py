"""Shared fixtures: tiny random models of every architecture in the component table,
the real default model (loaded once per test session) and the reference data folder.

Tiny models are built from configs with a byte-level BPE tokenizer trained here on a
few sentences, so no test downloads anything.  Architectures that prepend ``<bos>`` in
reality (Gemma, Llama, Qwen, Mistral) get a tokenizer that does too; the GPT family
gets one that does not.
"""
from __future__ import annotations

import itertools
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

import romelib
from romelib.paths import shared_data_dir

SHARED_DATA = shared_data_dir()   # $ROMELIB_SHARED_DATA or ../shared/data, as romelib reads it

CORPUS = [
    "The Space Needle is located in the city of Seattle.",
    "Michael Jordan plays the sport of basketball.",
    "The Eiffel Tower is in Paris, the capital of France.",
    "Bob works in the Empire State Building, which is in New York.",
    "Danielle Darrieux's mother tongue is French.",
    "Apple was founded by Steve Jobs and Steve Wozniak in California.",
    "Toko Yasuda plays the guitar; Rome is the capital of Italy.",
]

D, MLP, LAYERS, HEADS = 32, 64, 4, 4


def _configs(vocab: int) -> dict:
    from transformers import (
        Gemma2Config,
        Gemma3TextConfig,
        GemmaConfig,
        GPT2Config,
        GPTJConfig,
        GPTNeoXConfig,
        LlamaConfig,
        MistralConfig,
        Qwen2Config,
        Qwen3Config,
    )
    llama_like = dict(vocab_size=vocab, hidden_size=D, intermediate_size=MLP,
                      num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                      num_key_value_heads=2, max_position_embeddings=256,
                      pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return {
        "llama": LlamaConfig(**llama_like),
        "mistral": MistralConfig(**llama_like),
        "qwen2": Qwen2Config(**llama_like),
        "qwen3": Qwen3Config(**llama_like, head_dim=8),
        "gemma": GemmaConfig(**llama_like, head_dim=8),
        "gemma2": Gemma2Config(**llama_like, head_dim=8, sliding_window=16),
        "gemma3_text": Gemma3TextConfig(**llama_like, head_dim=8, sliding_window=16),
        "gpt2": GPT2Config(vocab_size=vocab, n_embd=D, n_layer=LAYERS, n_head=HEADS,
                           n_positions=256, bos_token_id=2, eos_token_id=2),
        "gptj": GPTJConfig(vocab_size=vocab, n_embd=D, n_layer=LAYERS, n_head=HEADS,
                           rotary_dim=4, n_positions=256, bos_token_id=2, eos_token_id=2),
        "gpt_neox": GPTNeoXConfig(vocab_size=vocab, hidden_size=D, intermediate_size=MLP,
                                  num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                  rotary_pct=0.5, max_position_embeddings=256,
                                  bos_token_id=2, eos_token_id=2),
    }


TINY_ARCHITECTURES = sorted(romelib.ARCHITECTURES)
USES_BOS = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text"}


def make_tokenizer(with_bos: bool):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<bos>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS * 5, trainer)
    if with_bos:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<bos> $A", special_tokens=[("<bos>", 1)])
        return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<bos>",
                                       eos_token="<eos>", pad_token="<pad>")
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<eos>")


def make_tiny_model(model_type: str, seed: int = 0) -> romelib.ModelAndTokenizer:
    """A randomly initialised 4-layer model of ``model_type`` with a matching tokenizer."""
    from transformers import AutoModelForCausalLM

    tokenizer = make_tokenizer(model_type in USES_BOS)
    vocab = 64 * ((len(tokenizer) + 63) // 64)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_configs(vocab)[model_type], dtype=torch.float32)
    return romelib.wrap_model(model, tokenizer, name=f"tiny-{model_type}", device="cpu")


@pytest.fixture(scope="session", params=TINY_ARCHITECTURES)
def tiny_mt(request) -> romelib.ModelAndTokenizer:
    """One tiny random model per architecture in the component table."""
    return make_tiny_model(request.param)


@pytest.fixture(scope="session")
def default_mt() -> romelib.ModelAndTokenizer:
    """The real embedded default model (Gemma 3 270M), loaded once per session."""
    return romelib.load_model(device="cpu")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The reference data folder; tests that need it skip with a reason when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data folder {SHARED_DATA} is absent (set ROMELIB_SHARED_DATA)")
    return SHARED_DATA


@contextmanager
def private_corpus(tmp_path_factory, name: str):
    """A small text file for key statistics and a private ``ROMELIB_CACHE`` for what tiny
    models compute (prefixes, statistics); model files stay shared through a link.

    Usage: ``with private_corpus(tmp_path_factory, "stats") as path: ...``
    """
    from romelib.paths import cache_dir

    folder = tmp_path_factory.mktemp(name)
    (cache_dir() / "models").mkdir(parents=True, exist_ok=True)
    (folder / "cache").mkdir()
    (folder / "cache" / "models").symlink_to(cache_dir() / "models", target_is_directory=True)
    path = folder / "corpus.txt"
    path.write_text("\n\n".join(" ".join(p) for p in itertools.permutations(CORPUS, 2)))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROMELIB_CACHE", str(folder / "cache"))
        yield path
