"""Key statistics: the estimate, its disk cache with checked metadata, the text sources."""
import pytest
import torch

import romelib
from conftest import make_tiny_model, private_corpus
from romelib.core.hparams import load_hparams
from romelib.core.tokens import special_prefix
from romelib.datasets.corpora import SourceUnavailable, detokenize_wikitext, text_source, wikitext_articles
from romelib.editing import key_statistics as stats
from romelib.editing.rome import ROMEHyperParams
from romelib.notices import SubstituteWarning


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A small text file and a private cache folder for tiny models."""
    with private_corpus(tmp_path_factory, "stats") as path:
        yield path


def explicit_second_moment(mt, layer, windows):
    """X^T X / n with X the keys of every text token, one window at a time, no batching."""
    skip = len(special_prefix(mt))
    keys = []
    for ids in windows:
        with torch.no_grad(), romelib.hooks(mt, [f"mlp_proj.{layer}"], retain_input=True) as acts:
            mt.model(input_ids=torch.tensor([ids]))
        keys.append(acts[f"mlp_proj.{layer}"].input[0, skip:])
    x = torch.cat(keys).double()                                        # (tokens, d_mlp)
    return x.T @ x / x.shape[0], x.shape[0]


def test_statistics_equal_an_explicit_x_transpose_x(tiny_mt, corpus):
    source = text_source(f"file:{corpus}")
    result = stats.compute_statistics(tiny_mt, [0, 2], source, max_tokens=700, window=40,
                                      batch_size=3, progress=False)
    windows = list(stats.token_windows(tiny_mt, source.documents(), 40, 700))
    for layer in (0, 2):
        expected, count = explicit_second_moment(tiny_mt, layer, windows)
        assert result[layer].count == count == 700
        torch.testing.assert_close(result[layer].mom2.double(), expected, rtol=1e-4, atol=1e-6)


def test_windows_respect_the_token_budget(corpus):
    mt = make_tiny_model("llama")                                       # prepends <bos>
    windows = list(stats.token_windows(mt, text_source(f"file:{corpus}").documents(), 32, 100))
    assert [len(w) - 1 for w in windows] == [32, 32, 32, 4]
    assert all(w[0] == mt.tokenizer.bos_token_id for w in windows)


def test_cached_statistics_are_reused_and_checked(corpus, monkeypatch):
    mt = make_tiny_model("gpt2")
    source = f"file:{corpus}"
    first = stats.key_statistics(mt, 1, source, max_tokens=500, progress=False)
    path = stats.statistics_paths(mt, 1, first.metadata["source"], 500)[1]
    assert path.exists() and first.count == 500

    calls = []
    real_compute = stats.compute_statistics
    monkeypatch.setattr(stats, "compute_statistics", lambda *a, **k: calls.append(1) or real_compute(*a, **k))
    again = stats.key_statistics(mt, 1, source, max_tokens=500, progress=False)
    assert calls == [] and torch.equal(again.mom2, first.mom2)        # read from the cache

    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF                                                  # damage the matrix
    path.write_bytes(bytes(data))
    with pytest.warns(SubstituteWarning, match="cannot be used.*checksum.*rebuilding it"):
        repaired = stats.key_statistics(mt, 1, source, max_tokens=500, progress=False)
    assert calls == [1]
    torch.testing.assert_close(repaired.mom2, first.mom2)

    path.write_bytes(path.read_bytes()[:100])                          # truncated
    stats.key_statistics(mt, 1, source, max_tokens=500, progress=False)
    assert calls == [1, 1]

    with torch.no_grad():                                              # other weights: stale
        mt.module("mlp", 0).c_fc.weight.mul_(1.5)
    stale = stats.key_statistics(mt, 1, source, max_tokens=500, progress=False)
    assert calls == [1, 1, 1] and not torch.allclose(stale.mom2, first.mom2)
    with torch.no_grad():                                              # the rewritten matrix
        mt.module("mlp_proj", 1).weight.mul_(2.0)                      # itself does not matter
    stats.key_statistics(mt, 1, source, max_tokens=500, progress=False)
    assert calls == [1, 1, 1]


def test_header_mismatch_is_refused(corpus):
    mt = make_tiny_model("qwen2")
    source = text_source(f"file:{corpus}")
    result = stats.compute_statistics(mt, [1], source, max_tokens=300, progress=False)[1]
    path = stats.statistics_paths(mt, 1, source.name, 300)[1]
    expected = stats.expected_metadata(mt, 1, source.name, 300)
    stats.load_statistics(path, expected, stats.weights_probe(mt, 1))  # fine
    for key, value in [("layer", 2), ("max_tokens", 400), ("source", "wikipedia"), ("format", 0)]:
        with pytest.raises(ValueError, match=key):
            stats.load_statistics(path, {**expected, key: value})
    assert result.count == 300


def test_text_sources_and_their_errors(corpus):
    with pytest.raises(ValueError, match="Unknown text source"):
        text_source("books")
    with pytest.raises(SourceUnavailable):
        text_source("file:/no/such/file.txt")
    with pytest.raises(ValueError, match="needs the model"):
        text_source("generated")
    mt = make_tiny_model("gpt2")
    generated = text_source("generated", mt=mt)                        # only when asked for
    assert generated.name == "generated" and len(next(iter(generated.documents()))) > 0
    lines = [" = Lobster = \n", " \n", " The lobster @-@ red , blue . \n", " = = Food = = \n",
             " Eaten ( boiled ) . \n", " = Crab = \n", " Crabs walk . \n"]
    articles = list(wikitext_articles(iter(lines)))
    assert articles == ["Lobster\n\nThe lobster-red, blue.\n\nFood\n\nEaten (boiled).", "Crab\n\nCrabs walk."]
    assert detokenize_wikitext(" 1 @,@ 000 people 's ") == "1,000 people's"


def test_the_shipped_statistics_load_for_the_default_model(default_mt, monkeypatch, tmp_path):
    hparams = load_hparams(ROMEHyperParams, "rome", default_mt.name)
    monkeypatch.setenv("ROMELIB_CACHE", str(tmp_path))                 # an empty user cache
    monkeypatch.setattr(stats, "compute_statistics", lambda *a, **k: pytest.fail("recomputed"))
    shipped = stats.statistics_paths(default_mt, hparams.layer, hparams.mom2_source,
                                     hparams.mom2_max_tokens)[0]
    assert shipped.exists(), f"{shipped} should ship with the repository"
    result = stats.key_statistics(default_mt, hparams.layer, hparams.mom2_source,
                                  hparams.mom2_max_tokens)
    assert result.metadata["source"] == "wikitext-2" and result.mom2.shape == (2048, 2048)
    assert result.count == (hparams.mom2_max_tokens or result.count) and result.count >= 100_000
    assert torch.allclose(result.mom2, result.mom2.T)
    assert torch.linalg.eigvalsh(result.mom2.double()).min() > 0      # invertible


def test_context_prefixes_are_generated_once_then_read_from_disk(corpus, monkeypatch):
    from romelib.editing import context_prefixes as texts

    mt = make_tiny_model("llama")
    prefixes = texts.context_prefixes(mt, lengths=(2, 4), per_length=3)
    assert len(prefixes) == 7 and prefixes[0] == "" and all(p.endswith(". ") for p in prefixes[1:])
    special = [t for t in mt.tokenizer.all_special_tokens if t]
    assert not any(s in p for s in special for p in prefixes)         # plain text only
    monkeypatch.setattr(texts, "generate", lambda *a, **k: pytest.fail("regenerated"))
    assert texts.context_prefixes(mt, lengths=(2, 4), per_length=3) == prefixes
