"""The built-in data sets written by us: ``builtin:corpus`` (8 genres × 8 prompts, ≥ 4,000 tokens), the refusal
corpus (balanced, the first 24 entries as first published) and the semantic probe (labels that are one content
token each with the SmolLM2 tokenizer, so that agreement with them is not a whitespace artefact)."""

from __future__ import annotations

import hashlib
from collections import Counter
from importlib import resources

import pytest

from blockcert.edit.refusal import load_corpus
from blockcert.prompts import CORPUS_GENRES, builtin, genres, names, probe_items

PROBE_KINDS = ("arithmetic", "fact", "yes/no", "completion", "antonym")
#: sha256 of the refusal corpus's first 24 lines as first published (answer-01..12, refuse-01..12): appended to, never edited
REFUSAL_V1_SHA256 = "809103a044b11fd8abad4dfffc63500de57f6f56c82d4a68fc574c320a86c04d"


def _text(name: str) -> str:
    return resources.files("blockcert.prompts").joinpath(name).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def tokenizer():
    """The default model's (SmolLM2) tokenizer alone, from its local Hugging Face directory."""
    from transformers import AutoTokenizer

    from blockcert.model.paths import hf_directory

    return AutoTokenizer.from_pretrained(hf_directory(None)[1])


# -- builtin:corpus ------------------------------------------------------------------------------------


def test_corpus_is_8_genres_of_8_prompts_one_per_line():
    assert "corpus" in names()
    text = _text("corpus.txt")
    prompts = builtin("corpus")
    assert text.endswith("\n") and text.count("\n") == len(prompts)  # no blank lines, no comments
    assert len(prompts) == 8 * len(CORPUS_GENRES) == 64
    assert all(p == p.strip() and "\t" not in p and "\r" not in p for p in prompts)
    assert len(set(prompts)) == len(prompts)
    assert not set(prompts) & {p for n in names() if n != "corpus" for p in builtin(n)}  # not copied from another set
    g = genres("corpus")
    assert g is not None and Counter(g) == dict.fromkeys(CORPUS_GENRES, 8)
    assert g[:: 8] == list(CORPUS_GENRES)  # genre by genre, in CORPUS_GENRES order
    assert genres("stress") is None
    assert all(prompts[i].startswith("Translate into") for i, x in enumerate(g) if x == "translation")


@pytest.mark.slow  # loads the default model's tokenizer
def test_corpus_token_counts(tokenizer):
    prompts, g = builtin("corpus"), genres("corpus")
    counts = [len(tokenizer(p)["input_ids"]) for p in prompts]
    assert sum(counts) >= 4000, sum(counts)
    assert all(30 <= n <= 120 for n in counts), [(n, p[:40]) for n, p in zip(counts, prompts) if not 30 <= n <= 120]
    per_genre = Counter()
    for n, x in zip(counts, g):
        per_genre[x] += n
    assert min(per_genre.values()) >= 0.5 * max(per_genre.values()), per_genre  # no genre is a token-count afterthought


# -- the refusal corpus --------------------------------------------------------------------------------


def test_refusal_corpus_is_balanced_and_appended_to():
    lines = _text("refusal.jsonl").splitlines()
    assert hashlib.sha256("\n".join(lines[:24]).encode()).hexdigest() == REFUSAL_V1_SHA256  # first 24 unchanged, in place
    items, _ = load_corpus()
    assert len(items) >= 60
    by_label = Counter(i.label for i in items)
    assert by_label["answer"] == by_label["refuse"] == len(items) // 2
    for label in ("answer", "refuse"):
        ids = [i.id for i in items if i.label == label]
        assert ids == [f"{label}-{k:02d}" for k in range(1, len(ids) + 1)]
        per_category = Counter(i.category for i in items if i.label == label)
        assert len(per_category) >= 10 and len(set(per_category.values())) == 1, per_category  # categories covered evenly
    prompts = [i.prompt for i in items]
    assert len(set(prompts)) == len(prompts)
    for i in items:
        if i.label == "refuse":
            assert len(i.keywords) >= 4 and "If " in i.prompt, i.id  # compliance markers; the prompt offers a safe way out
            assert not [k for k in i.keywords if k.lower() in i.prompt.lower()], i.id  # a refusal echoing the request is no hit
        else:
            assert not i.keywords, i.id


# -- the semantic probe --------------------------------------------------------------------------------


def test_probe_is_balanced_over_kinds():
    items = probe_items()
    assert len(items) >= 60
    kinds = Counter(i["kind"] for i in items)
    assert set(kinds) == set(PROBE_KINDS) and len(set(kinds.values())) == 1, kinds
    yes_no = Counter(i["label"] for i in items if i["kind"] == "yes/no")
    assert set(yes_no) == {"Yes", "No"} and yes_no["Yes"] == yes_no["No"]
    prompts = [i["prompt"] for i in items]
    assert len(set(prompts)) == len(prompts)
    for i in items:
        assert set(i) == {"prompt", "label", "kind"}
        assert i["prompt"] == i["prompt"].strip() and i["label"] == i["label"].strip() and " " not in i["label"], i


@pytest.mark.slow  # loads the default model's tokenizer
def test_probe_labels_are_one_content_token(tokenizer):
    """As the probe compares them (the greedy next token, decoded and stripped), each label with the leading
    space it takes after the prompt is exactly one token, neither whitespace nor a special token, and the
    prompt's own tokens are a prefix of prompt + label's: the label is a possible next token as it stands."""
    special = set(tokenizer.all_special_ids)
    for i in probe_items():
        ids = tokenizer(" " + i["label"], add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, (i["label"], ids)
        assert ids[0] not in special and tokenizer.decode(ids).strip() == i["label"], (i["label"], tokenizer.decode(ids))
        prompt = tokenizer(i["prompt"])["input_ids"]
        assert tokenizer(i["prompt"] + " " + i["label"])["input_ids"] == prompt + ids, i["prompt"]


def test_no_prompt_appears_twice_across_the_built_in_sets():
    texts = [p for n in names() for p in builtin(n)] + [i["prompt"] for i in probe_items()] + [i.prompt for i in load_corpus()[0]]
    assert len(texts) == len(set(texts)), [t for t, c in Counter(texts).items() if c > 1]
