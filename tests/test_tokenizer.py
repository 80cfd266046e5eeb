"""SqueezeBertTokenizer against transformers' BertTokenizerFast on the real bert-base-uncased
vocabulary (from the MiniLM checkpoint): ids, type ids, masks, offsets and special-token masks
for texts, pairs and batches under every option, truncation and padding strategy; tensors;
save / load round trips through transformers; and every error path with its message.

The reference is built with `BertTokenizerFast(vocab=PATH)` or `from_pretrained(folder)`:
in transformers 5 `BertTokenizerFast(vocab_file=PATH)` silently ignores the keyword and every
word becomes [UNK], which would make parity vacuous (test_reference_knows_the_vocabulary).
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertTokenizerFast
from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

from sbexport.errors import SbexportError
from sbexport.tokenizer import SqueezeBertTokenizer, TokenizerError, TokenizerFileNotFoundError

CORPUS_FILE = Path(__file__).parent / "data" / "tokenizer_corpus.txt"
# Over 512 WordPiece tokens: "word17" alone is three pieces.
LONG_TEXT = " ".join(f"word{i} tokenization, again" for i in range(200))
BUILT_SINGLES = ["", " ", "  \t\n  ", "a" * 100, "a" * 101, "x" * 150 + " fits", "中" * 120, LONG_TEXT]
BUILT_PAIRS = [("", ""), ("a b c d e f", "x y z"), ("a", "b c d e f g"), (LONG_TEXT, "short pair"),
               ("short first", LONG_TEXT)]

FIELDS = ("input_ids", "token_type_ids", "attention_mask", "special_tokens_mask", "offset_mapping")
OPTION_GRID = [dict(do_lower_case=lower, strip_accents=strip, tokenize_chinese_chars=cjk)
               for lower, strip, cjk in itertools.product((True, False), (None, True, False), (True, False))]


def _unescape(line: str) -> str:
    """Replace the corpus file's \\uXXXX and \\UXXXXXXXX escapes by the characters."""
    return re.sub(r"\\u([0-9a-fA-F]{4})|\\U([0-9a-fA-F]{8})",
                  lambda m: chr(int(m.group(1) or m.group(2), 16)), line)


def _read_corpus() -> tuple[list[str], list[tuple[str, str]]]:
    """Returns (single texts, pairs) from the corpus file plus the texts built here."""
    singles, pairs = [], []
    for line in CORPUS_FILE.read_text(encoding="utf-8").split("\n"):
        if not line or line.startswith("#"):
            continue
        parts = [_unescape(part) for part in line.split("\t")]
        if len(parts) == 1:
            singles.append(parts[0])
        else:
            pairs.append((parts[0], parts[1]))
    return singles + BUILT_SINGLES, pairs + BUILT_PAIRS


SINGLES, PAIRS = _read_corpus()


# -- fixtures -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vocab_path(minilm_dir: Path) -> Path:
    return minilm_dir / "vocab.txt"


@pytest.fixture(scope="module")
def tok(vocab_path: Path) -> SqueezeBertTokenizer:
    return SqueezeBertTokenizer(vocab_path)


@pytest.fixture(scope="module")
def ref(vocab_path: Path) -> BertTokenizerFast:
    return BertTokenizerFast(vocab=str(vocab_path), model_max_length=512)


@pytest.fixture(scope="module")
def make_pair(vocab_path: Path):
    """Returns a function options -> (ours, reference), built once per set of options."""
    @functools.cache
    def build(**options):
        return (SqueezeBertTokenizer(vocab_path, **options),
                BertTokenizerFast(vocab=str(vocab_path), model_max_length=512, **options))
    return build


def _plain(value):
    """Nested lists from arrays or tensors, for equality checks; lists pass through (both
    tokenizers give offsets as tuples there)."""
    return value.tolist() if isinstance(value, (np.ndarray, torch.Tensor)) else value


def assert_same(ours: dict, theirs, context="") -> None:
    """Every field the reference returned is present in ours and equal."""
    for key in FIELDS:
        if key in theirs:
            assert key in ours, f"{context}: {key} missing"
            assert _plain(ours[key]) == _plain(theirs[key]), f"{context}: {key} differs"
    assert set(ours) == {k for k in FIELDS if k in theirs}, context


def outcome(tokenizer, *args, **kwargs):
    """Returns ("ok", output) or ("error", exception) so that results and failures compare."""
    try:
        return "ok", tokenizer(*args, **kwargs)
    except Exception as e:  # the reference raises a bare Exception from Rust
        return "error", e


# -- the reference is sound -----------------------------------------------------------------

def test_reference_knows_the_vocabulary(ref, tok):
    assert ref.convert_tokens_to_ids("hello") == 7592 == tok.convert_tokens_to_ids("hello")
    assert ref("hello world")["input_ids"] == [101, 7592, 2088, 102]
    assert len(SINGLES) > 30 and len(PAIRS) > 10


# -- parity: single texts, pairs, batches under every normaliser option -------------------------

@pytest.mark.parametrize("options", OPTION_GRID, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_batches_match_under_every_option(make_pair, options):
    ours, ref = make_pair(**options)
    extras = dict(return_offsets_mapping=True, return_special_tokens_mask=True)
    assert_same(ours(SINGLES, **extras), ref(SINGLES, **extras), "batch of singles")
    firsts, seconds = map(list, zip(*PAIRS))
    assert_same(ours(firsts, seconds, **extras), ref(firsts, seconds, **extras), "batch of pairs")


def test_every_option_changes_the_corpus_ids(make_pair):
    # Keeps the grid above honest: the corpus tells all options apart, and strip_accents=None
    # behaves as strip_accents=do_lower_case, as in BERT.
    def ids(**options):
        return make_pair(**options)[0](SINGLES)["input_ids"]
    effective = {}
    for options in OPTION_GRID:
        strip = options["do_lower_case"] if options["strip_accents"] is None else options["strip_accents"]
        key = (options["do_lower_case"], strip, options["tokenize_chinese_chars"])
        effective.setdefault(key, []).append(ids(**options))
    assert len(effective) == 8
    assert all(group[0] == other for group in effective.values() for other in group)
    assert len({str(group[0]) for group in effective.values()}) == 8


def test_single_calls_match(tok, ref):
    # The unbatched path: one text or pair per call, results without the batch level.
    extras = dict(return_offsets_mapping=True, return_special_tokens_mask=True)
    for text in SINGLES:
        assert tok.tokenize(text) == ref.tokenize(text), repr(text)
        assert_same(tok(text, **extras), ref(text, **extras), repr(text))
    for first, second in PAIRS:
        if second:  # see test_empty_text_pair_is_a_pair for the single-call "" difference
            assert_same(tok(first, second, **extras), ref(first, second, **extras), repr((first, second)))


@pytest.mark.parametrize("add_special_tokens", [True, False])
def test_without_special_tokens_matches(tok, ref, add_special_tokens):
    firsts, seconds = map(list, zip(*PAIRS))
    kwargs = dict(add_special_tokens=add_special_tokens, return_special_tokens_mask=True,
                  return_offsets_mapping=True)
    assert_same(tok(SINGLES, **kwargs), ref(SINGLES, **kwargs))
    assert_same(tok(firsts, seconds, **kwargs), ref(firsts, seconds, **kwargs))


def test_loaded_from_tokenizer_json_and_folder_match(minilm_dir, ref):
    from_json = SqueezeBertTokenizer.from_file(minilm_dir / "tokenizer.json")
    from_folder = SqueezeBertTokenizer.from_pretrained(minilm_dir)
    ref_folder = BertTokenizerFast.from_pretrained(str(minilm_dir))
    assert from_folder.model_max_length == ref_folder.model_max_length == 512
    firsts, seconds = map(list, zip(*PAIRS))
    for ours in (from_json, from_folder):
        assert_same(ours(SINGLES, return_offsets_mapping=True), ref_folder(SINGLES, return_offsets_mapping=True))
        assert_same(ours(firsts, seconds, truncation=True, padding=True),
                    ref_folder(firsts, seconds, truncation=True, padding=True))


def test_tokenizer_json_options_can_be_overridden(minilm_dir, make_pair):
    ours = SqueezeBertTokenizer.from_file(minilm_dir / "tokenizer.json", do_lower_case=False)
    _, ref = make_pair(do_lower_case=False)
    assert ours.do_lower_case is False
    assert ours(SINGLES)["input_ids"] == ref(SINGLES)["input_ids"]


# -- parity: truncation and padding -----------------------------------------------------------

@pytest.mark.parametrize("truncation", [True, "longest_first", "only_first", "only_second",
                                        "do_not_truncate", None])
@pytest.mark.parametrize("max_length", [3, 4, 7, 13, None])
def test_truncation_matches(tok, ref, truncation, max_length):
    # Singles need max_length >= 2 and pairs >= 3 (test_max_length_below_special_tokens_raises).
    # Pairs with an empty second text are left to test_empty_text_pair_is_a_pair.
    cases = [(text,) for text in SINGLES] + [pair for pair in PAIRS if pair[1]]
    for args in cases:
        kwargs = dict(truncation=truncation, max_length=max_length, return_offsets_mapping=True,
                      return_special_tokens_mask=True)
        (ours_kind, ours), (ref_kind, theirs) = outcome(tok, *args, **kwargs), outcome(ref, *args, **kwargs)
        assert ours_kind == ref_kind, (args, ours, theirs)
        if ours_kind == "ok":
            assert_same(ours, theirs, repr(args))
        else:
            assert isinstance(ours, TokenizerError), ours
            assert "Truncation error" in str(theirs)


@pytest.mark.parametrize("strategy", ["longest_first", "only_first", "only_second"])
def test_batch_truncation_matches(tok, ref, strategy):
    firsts = ["a b c d e f g h", "one two", "x " * 30]
    seconds = ["p q r s", "alpha beta gamma delta epsilon zeta eta theta", "y " * 30]
    for max_length in (12, 40, 70):
        kwargs = dict(truncation=strategy, max_length=max_length, padding=True)
        (ours_kind, ours), (ref_kind, theirs) = outcome(tok, firsts, seconds, **kwargs), \
            outcome(ref, firsts, seconds, **kwargs)
        # At 12 the third pair cannot be cut by one side alone: the whole batch fails in both.
        assert (ours_kind, ref_kind) == (("error", "error") if max_length == 12 and strategy != "longest_first"
                                         else ("ok", "ok")), (ours, theirs)
        if ours_kind == "ok":
            assert_same(ours, theirs, f"max_length={max_length}")


def test_only_second_errors_are_clear(tok):
    with pytest.raises(TokenizerError, match="truncation='only_second' needs a text_pair"):
        tok("a b c d e f", truncation="only_second", max_length=5)
    with pytest.raises(TokenizerError, match="cannot fit max_length: 6 tokens must go but the second "
                                             "sequence has only 3; use truncation='longest_first'"):
        tok("a b c d e f", "x y z", truncation="only_second", max_length=6)
    with pytest.raises(TokenizerError, match="the first sequence has only 1"):
        tok("a", "b c d e f g", truncation="only_first", max_length=5)
    # Short enough: nothing to cut, so no error, as in the reference.
    assert tok("a b", truncation="only_second", max_length=5)["input_ids"] == [101, 1037, 1038, 102]


def test_max_length_below_special_tokens_raises(tok, ref):
    # A documented difference: the Rust backend wraps max_length - 3 around and does not
    # truncate at all; we refuse instead.
    assert len(ref("a b c", "d e", truncation=True, max_length=2)["input_ids"]) == 8
    with pytest.raises(TokenizerError, match="max_length=2 cannot hold the 3 special tokens of a pair"):
        tok("a b c", "d e", truncation=True, max_length=2)
    with pytest.raises(TokenizerError, match="max_length=1 cannot hold the 2 special tokens of a single text"):
        tok("a b c", truncation=True, max_length=1)
    # Exactly the special tokens: the texts are cut to nothing, as in the reference.
    assert tok("a b c", "d e", truncation=True, max_length=3)["input_ids"] == [101, 102, 102]
    assert tok("a b c", truncation=True, max_length=0, add_special_tokens=False)["input_ids"] == []


@pytest.mark.parametrize("padding", [True, "longest", "max_length", "do_not_pad"])
@pytest.mark.parametrize("max_length", [None, 6, 40])
@pytest.mark.parametrize("truncation", [None, True])
def test_padding_matches(tok, ref, padding, max_length, truncation):
    firsts, seconds = map(list, zip(*PAIRS))
    kwargs = dict(padding=padding, max_length=max_length, truncation=truncation,
                  return_offsets_mapping=True, return_special_tokens_mask=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers warns that padding=True ignores max_length
        assert_same(tok(SINGLES, **kwargs), ref(SINGLES, **kwargs), "singles")
        assert_same(tok(firsts, seconds, **kwargs), ref(firsts, seconds, **kwargs), "pairs")


def test_padding_is_on_the_right_with_zero_mask(tok):
    out = tok(["a b c", ""], padding="max_length", max_length=7)
    assert out["input_ids"] == [[101, 1037, 1038, 1039, 102, 0, 0], [101, 102, 0, 0, 0, 0, 0]]
    assert out["attention_mask"] == [[1, 1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0, 0]]


def test_calls_leave_no_state_behind(tok):
    # Truncation and padding are per call: a later call sees none of an earlier one's.
    tok([LONG_TEXT, "a"], truncation=True, max_length=8, padding="max_length")
    out = tok([LONG_TEXT, "a"])
    assert len(out["input_ids"][0]) > 512 and out["input_ids"][1] == [101, 1037, 102]


# -- special and edge-case inputs -------------------------------------------------------------

def test_empty_and_whitespace_text_encode_to_cls_sep(tok):
    for text in ("", " ", "\t\n", "\u200b", "\x00\x07"):
        assert tok(text)["input_ids"] == [tok.cls_token_id, tok.sep_token_id] == [101, 102]
    assert tok("", "")["input_ids"] == [101, 102, 102]


def test_empty_text_pair_is_a_pair(tok, ref):
    # Documented difference: BertTokenizerFast drops text_pair="" for a single call (it tests
    # the pair's truth value) but keeps it in a batch; we always keep it.
    assert tok("a", "")["input_ids"] == ref(["a"], [""])["input_ids"][0] == [101, 1037, 102, 102]
    assert ref("a", "")["input_ids"] == [101, 1037, 102]


def test_long_text_and_long_words(tok, ref):
    assert len(tok(LONG_TEXT)["input_ids"]) > 512
    assert len(tok(LONG_TEXT, truncation=True)["input_ids"]) == 512
    assert tok(LONG_TEXT, truncation=True) == ref(LONG_TEXT, truncation=True)
    assert tok.tokenize("a" * 101 + " b") == ["[UNK]", "b"]
    assert "[UNK]" not in tok.tokenize("a" * 100)


def test_special_tokens_in_text_stay_whole(tok):
    assert tok.tokenize("x[MASK]y [CLS]") == ["x", "[MASK]", "y", "[CLS]"]
    assert tok.tokenize("[mask]") == ["[", "mask", "]"]  # matched before lowercasing only


# -- tensors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("return_tensors", ["np", "pt"])
def test_tensors_are_int64_and_match(tok, ref, return_tensors):
    kwargs = dict(padding=True, truncation=True, return_tensors=return_tensors,
                  return_offsets_mapping=True, return_special_tokens_mask=True)
    ours, theirs = tok(SINGLES, **kwargs), ref(SINGLES, **kwargs)
    batch, seq = len(SINGLES), 512
    array_type = np.ndarray if return_tensors == "np" else torch.Tensor
    for key in FIELDS:
        assert isinstance(ours[key], array_type)
        assert ours[key].dtype == (np.int64 if return_tensors == "np" else torch.int64)
        assert tuple(ours[key].shape) == ((batch, seq, 2) if key == "offset_mapping" else (batch, seq))
        assert _plain(ours[key]) == _plain(theirs[key]), key
    single = tok("hello world", return_tensors=return_tensors, return_offsets_mapping=True)
    assert tuple(single["input_ids"].shape) == (1, 4)
    assert tuple(single["offset_mapping"].shape) == (1, 4, 2)
    empty = tok("", add_special_tokens=False, return_tensors=return_tensors, return_offsets_mapping=True)
    assert tuple(empty["offset_mapping"].shape) == (1, 0, 2)


@pytest.mark.parametrize("return_tensors", ["np", "pt"])
def test_ragged_batch_as_tensors_raises(tok, return_tensors):
    with pytest.raises(TokenizerError, match=re.escape(
            f"cannot make '{return_tensors}' tensors from sequences of different lengths (3 to 4 "
            "tokens); pass padding=True or padding='max_length'")):
        tok(["a", "a b"], return_tensors=return_tensors)


def test_lists_hold_python_ints(tok):
    out = tok(["a b", "c"], padding=True, return_offsets_mapping=True)
    assert all(type(i) is int for row in out["input_ids"] for i in row)
    assert out["offset_mapping"][0][1] == (0, 1)


# -- ids, tokens, decode and the special-token helpers --------------------------------------------

def test_vocab_and_special_ids_match(tok, ref):
    assert tok.vocab_size == ref.vocab_size == 30522
    for name in ("cls", "sep", "pad", "mask", "unk"):
        assert getattr(tok, f"{name}_token_id") == getattr(ref, f"{name}_token_id"), name
    assert tok.get_vocab() == ref.get_vocab()


def test_token_id_conversion_matches(tok, ref):
    tokens = ref.tokenize(" ".join(SINGLES[:20])) + ["not-a-token", "[MASK]"]
    assert tok.convert_tokens_to_ids(tokens) == ref.convert_tokens_to_ids(tokens)
    assert tok.convert_tokens_to_ids("zzzqqq") == 100
    ids = list(range(0, 30522, 97))
    assert tok.convert_ids_to_tokens(ids) == ref.convert_ids_to_tokens(ids)
    assert tok.convert_ids_to_tokens(np.int64(7592)) == "hello"


@pytest.mark.parametrize("skip_special_tokens", [True, False])
def test_decode_matches(tok, ref, skip_special_tokens):
    for args in [(text,) for text in SINGLES] + list(PAIRS):
        ids = ref(*args)["input_ids"]
        assert tok.decode(ids, skip_special_tokens=skip_special_tokens) == \
            ref.decode(ids, skip_special_tokens=skip_special_tokens), repr(args)
    assert tok.decode(torch.tensor([101, 7592, 102])) == "hello"
    assert tok.decode([101, 7592, 0, 102]) == "hello"  # skip_special_tokens defaults to True


def test_special_token_helpers_match_bert(vocab_path, tok, ref):
    # transformers 5 dropped build_inputs_with_special_tokens and friends from the fast
    # tokenizer; its Python BertTokenizerLegacy still has them.
    legacy = BertTokenizerLegacy(str(vocab_path))
    a, b = [7592, 2088], [1037]
    for ids1 in (None, b):
        assert tok.build_inputs_with_special_tokens(a, ids1) == legacy.build_inputs_with_special_tokens(a, ids1)
        assert tok.get_special_tokens_mask(a, ids1) == legacy.get_special_tokens_mask(a, ids1)
        assert (tok.create_token_type_ids_from_sequences(a, ids1)
                == legacy.create_token_type_ids_from_sequences(a, ids1))
    assert tok.build_inputs_with_special_tokens(a, b) == ref("hello world", "a")["input_ids"]
    formatted = [101, 7592, 100, 102, 0, 103, 1037]
    assert (tok.get_special_tokens_mask(formatted, already_has_special_tokens=True)
            == ref.get_special_tokens_mask(formatted, already_has_special_tokens=True)
            == [1, 0, 1, 1, 1, 1, 0])


# -- options BertTokenizerFast does not honour ------------------------------------------------

def test_never_split_is_ignored_like_the_fast_tokenizer(vocab_path, ref):
    with pytest.warns(UserWarning, match=re.escape("never_split=['hello-world'] has no effect")):
        ours = SqueezeBertTokenizer(vocab_path, never_split=["hello-world", "[CLS]"])
    ref_ns = BertTokenizerFast(vocab=str(vocab_path), never_split=["hello-world"])
    assert ours.tokenize("hello-world [CLS]") == ref_ns.tokenize("hello-world [CLS]") == \
        ["hello", "-", "world", "[CLS]"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # special tokens only: nothing to warn about
        SqueezeBertTokenizer(vocab_path, never_split=["[CLS]", "[SEP]"])


def test_do_basic_tokenize_false_matches_the_python_bert_tokenizer(vocab_path):
    ours = SqueezeBertTokenizer(vocab_path, do_basic_tokenize=False)
    legacy = BertTokenizerLegacy(str(vocab_path), do_basic_tokenize=False)
    for text in SINGLES:
        assert ours(text)["input_ids"] == legacy(text)["input_ids"], repr(text)
    # No lowercasing or punctuation split: "Hello," is not in the uncased vocabulary.
    assert ours.tokenize("Hello, world,x") == ["[UNK]", "world", "##,", "##x"]
    # The one known difference: Python's str.split also splits on U+001C..U+001F.
    assert ours.tokenize("a\x1cb") == ["[UNK]"] and legacy.tokenize("a\x1cb") == ["a", "b"]


# -- save and load ----------------------------------------------------------------------------

@pytest.mark.parametrize("options", [{}, dict(do_lower_case=False), dict(strip_accents=False),
                                     dict(tokenize_chinese_chars=False)], ids=str)
def test_save_pretrained_loads_in_transformers(tmp_path, vocab_path, options):
    ours = SqueezeBertTokenizer(vocab_path, **options)
    paths = ours.save_pretrained(tmp_path / "tok")
    assert [Path(p).name for p in paths] == ["tokenizer.json", "vocab.txt", "tokenizer_config.json"]
    assert (tmp_path / "tok" / "vocab.txt").read_bytes() == vocab_path.read_bytes()
    theirs = BertTokenizerFast.from_pretrained(str(tmp_path / "tok"))
    assert type(AutoTokenizer.from_pretrained(str(tmp_path / "tok"))) is BertTokenizerFast
    reloaded = SqueezeBertTokenizer.from_pretrained(tmp_path / "tok")
    for name in ("do_lower_case", "strip_accents", "tokenize_chinese_chars", "do_basic_tokenize",
                 "model_max_length", "never_split", "cls_token", "unk_token"):
        assert getattr(reloaded, name) == getattr(ours, name), name
    firsts, seconds = map(list, zip(*PAIRS))
    expected = ours(firsts, seconds, return_offsets_mapping=True)
    assert_same(expected, theirs(firsts, seconds, return_offsets_mapping=True))
    assert_same(reloaded(firsts, seconds, return_offsets_mapping=True), theirs(firsts, seconds,
                                                                             return_offsets_mapping=True))
    assert ours(SINGLES)["input_ids"] == theirs(SINGLES)["input_ids"]


def test_from_pretrained_prefers_config_over_tokenizer_json(tmp_path, vocab_path, make_pair):
    SqueezeBertTokenizer(vocab_path).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    # transformers writes 1e30 for "no limit" and may store special tokens as AddedToken dicts.
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        **config, "do_lower_case": False, "model_max_length": int(1e30),
        "mask_token": {"content": "[MASK]", "lstrip": False, "special": True}}))
    loaded = SqueezeBertTokenizer.from_pretrained(tmp_path)
    assert loaded.do_lower_case is False and loaded.model_max_length == 512
    assert loaded.mask_token == "[MASK]"
    assert loaded(SINGLES)["input_ids"] == make_pair(do_lower_case=False)[1](SINGLES)["input_ids"]
    (tmp_path / "tokenizer.json").unlink()  # falls back to vocab.txt
    assert SqueezeBertTokenizer.from_pretrained(tmp_path).do_lower_case is False


def test_do_basic_tokenize_false_round_trips(tmp_path, vocab_path):
    ours = SqueezeBertTokenizer(vocab_path, do_basic_tokenize=False)
    ours.save_pretrained(tmp_path)
    for loaded in (SqueezeBertTokenizer.from_pretrained(tmp_path),
                   SqueezeBertTokenizer.from_file(tmp_path / "tokenizer.json")):
        assert loaded.do_basic_tokenize is False
        assert loaded(SINGLES)["input_ids"] == ours(SINGLES)["input_ids"]


def test_save_vocabulary(tmp_path, tok, vocab_path):
    (path,) = tok.save_vocabulary(tmp_path, filename_prefix="sb")
    assert Path(path) == tmp_path / "sb-vocab.txt"
    assert Path(path).read_bytes() == vocab_path.read_bytes()
    with pytest.raises(TokenizerFileNotFoundError, match="folder to save the vocabulary in not found"):
        tok.save_vocabulary(tmp_path / "missing")


# -- error paths ------------------------------------------------------------------------------

def _write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


SPECIALS = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n"


def test_missing_vocab_file(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match=re.escape(f"vocab file not found: {missing}")) as info:
        SqueezeBertTokenizer(missing)
    assert isinstance(info.value, SbexportError)  # the CLI prints these as one-line messages
    with pytest.raises(TokenizerError, match="is a folder, not a file"):
        SqueezeBertTokenizer(tmp_path)


@pytest.mark.parametrize("content, message", [
    ("", "is empty"),
    (b"[PAD]\n\xff\xfe garbage\n", "is not UTF-8 text"),
    (SPECIALS + "hello\n\nworld\n", "line 7 is empty"),
    (SPECIALS + "hello\nhello\n", "lists 'hello' twice (lines 6 and 7)"),
    ("[PAD]\n[UNK]\n[CLS]\nhello\n", "lacks the special token(s) '[SEP]' (sep_token), '[MASK]' (mask_token)"),
], ids=["empty", "not-utf8", "blank-line", "duplicate", "no-specials"])
def test_bad_vocab_files(tmp_path, content, message):
    path = _write(tmp_path / "vocab.txt", content)
    with pytest.raises(TokenizerError, match=re.escape(message)) as info:
        SqueezeBertTokenizer(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_small_valid_vocab_and_crlf(tmp_path):
    path = _write(tmp_path / "vocab.txt", (SPECIALS + "hello\nworld\n##s\n").replace("\n", "\r\n"))
    small = SqueezeBertTokenizer(path)
    assert small("Hello worlds!")["input_ids"] == [2, 5, 6, 7, 1, 3]


def test_special_token_not_in_vocab(vocab_path):
    with pytest.raises(TokenizerError, match=re.escape("lacks the special token(s) '<s>' (cls_token)")):
        SqueezeBertTokenizer(vocab_path, cls_token="<s>")


@pytest.mark.parametrize("mutate, message", [
    (lambda j: "{not json", "is not valid JSON"),
    (lambda j: {**j, "model": {**j["model"], "type": "BPE"}}, "holds a BPE model, not the WordPiece model"),
    (lambda j: {**j, "model": {**j["model"], "vocab": {"[PAD]": 0, "[UNK]": 5}}}, "ids are not 0..1"),
    (lambda j: {**j, "model": {**j["model"], "vocab": {}}}, "empty or malformed model.vocab"),
    (lambda j: {**j, "normalizer": {"type": "NFC"}}, "uses a NFC normalizer"),
    (lambda j: {**j, "pre_tokenizer": {"type": "Metaspace"}}, "uses a Metaspace pre-tokenizer"),
    (lambda j: {**j, "added_tokens": j["added_tokens"] + [{"id": 30522, "content": "<new>", "special": True}]},
     "adds tokens beyond the special tokens of its vocabulary: ['<new>']"),
], ids=["not-json", "bpe", "gapped-ids", "empty-vocab", "normalizer", "pre-tokenizer", "added-tokens"])
def test_bad_tokenizer_json(tmp_path, minilm_dir, mutate, message):
    data = mutate(json.loads((minilm_dir / "tokenizer.json").read_text(encoding="utf-8")))
    path = _write(tmp_path / "tokenizer.json", data if isinstance(data, str) else json.dumps(data))
    with pytest.raises(TokenizerError, match=re.escape(message)) as info:
        SqueezeBertTokenizer.from_file(path)
    assert str(path) in str(info.value)


def test_from_file_and_from_pretrained_errors(tmp_path, minilm_dir):
    with pytest.raises(FileNotFoundError, match="tokenizer file not found"):
        SqueezeBertTokenizer.from_file(tmp_path / "tokenizer.json")
    with pytest.raises(TypeError, match=r"unexpected tokenizer options: \['lowercase'\]"):
        SqueezeBertTokenizer.from_file(minilm_dir / "tokenizer.json", lowercase=True)
    with pytest.raises(FileNotFoundError, match="tokenizer folder not found"):
        SqueezeBertTokenizer.from_pretrained(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="has neither tokenizer.json nor vocab.txt"):
        SqueezeBertTokenizer.from_pretrained(tmp_path)
    _write(tmp_path / "vocab.txt", SPECIALS)
    _write(tmp_path / "tokenizer_config.json", "{broken")
    with pytest.raises(TokenizerError, match="tokenizer_config.json is not valid JSON"):
        SqueezeBertTokenizer.from_pretrained(tmp_path)
    _write(tmp_path / "tokenizer_config.json", "[1, 2]")
    with pytest.raises(TokenizerError, match="tokenizer_config.json is not a JSON object"):
        SqueezeBertTokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize("options, message", [
    (dict(do_lower_case="yes"), "do_lower_case must be True or False, got 'yes'"),
    (dict(strip_accents=1), "strip_accents must be None, True or False, got 1"),
    (dict(model_max_length=0), "model_max_length must be a positive int, got 0"),
    (dict(pad_token=""), "pad_token must be a non-empty str, got ''"),
    (dict(never_split="[CLS]"), "never_split must be a list of str or None, got '[CLS]'"),
])
def test_bad_options(vocab_path, options, message):
    with pytest.raises(TokenizerError, match=re.escape(message)):
        SqueezeBertTokenizer(vocab_path, **options)


@pytest.mark.parametrize("args, kwargs, error, message", [
    (("a",), dict(padding="left"), TokenizerError, "padding='left' is not one of True, False"),
    (("a",), dict(truncation="yes"), TokenizerError, "truncation='yes' is not one of True, False"),
    (("a",), dict(return_tensors="tf"), TokenizerError, "return_tensors='tf' is not one of"),
    (("a",), dict(max_length=-1), TokenizerError, "max_length must be an int >= 0 or None, got -1"),
    (("a",), dict(max_length=True), TokenizerError, "max_length must be an int >= 0 or None, got True"),
    ((123,), {}, TypeError, "text must be a str or a list of str"),
    ((["a", None],), {}, TypeError, "text must be a str or a list of str"),
    ((["a", "b"], "c"), {}, TypeError, "text and text_pair must both be str or both be lists of str"),
    ((["a", "b"], ["c"]), {}, TokenizerError, "text has 2 items but text_pair has 1"),
    ((["a"], [None]), {}, TypeError, "text_pair must be a str or a list of str"),
])
def test_bad_call_arguments(tok, args, kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        tok(*args, **kwargs)


def test_bad_ids_and_helpers(tok):
    with pytest.raises(TokenizerError, match=re.escape("token id(s) [30522, -1] outside the vocabulary (0..30521)")):
        tok.decode([101, 30522, -1])
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        tok.convert_ids_to_tokens(99999)
    with pytest.raises(TokenizerError, match="ids1 must be None when already_has_special_tokens=True"):
        tok.get_special_tokens_mask([101, 102], [5], already_has_special_tokens=True)
    with pytest.raises(TypeError, match="text must be a str, got int"):
        tok.tokenize(5)


# -- against transformers' pure-Python BertTokenizer --------------------------------------------
#
# BertTokenizerFast runs on the same Rust `tokenizers` engine as SqueezeBertTokenizer, so a bug
# in that engine's WordPiece (or in how both drive it) would pass every test above. In
# transformers 5 the pure-Python implementation is BertTokenizerLegacy (BertTokenizer is now
# the Rust-backed class). Compared here on the corpus: input ids, token types and attention
# masks, under every normaliser option, alone, in pairs, and in batches padded and truncated.
# Where they legitimately differ (asserted precisely below):
#  - the Python tokenizer returns token_type_ids only when asked (its model_input_names are
#    input_ids and attention_mask); sbexport's always returns them (its models take them);
#  - it has no offsets (return_offsets_mapping is silently ignored);
#  - a truncation that cannot reach max_length: it logs an error and returns a row longer than
#    max_length; sbexport's raises TokenizerError (a model fed that row would fail later).

COMPARED = ("input_ids", "token_type_ids", "attention_mask")
ASK = dict(return_token_type_ids=True, return_attention_mask=True)


@functools.cache
def _python_pair(vocab_path: Path, **options):
    return (SqueezeBertTokenizer(vocab_path, **options),
            BertTokenizerLegacy(str(vocab_path), model_max_length=512, **options))


def _assert_compared_equal(ours, theirs, context):
    for key in COMPARED:
        assert _plain(ours[key]) == _plain(theirs[key]), f"{context}: {key} differs"


def test_python_reference_is_another_engine(vocab_path):
    from transformers.tokenization_python import PythonBackend
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    _, python = _python_pair(vocab_path)
    assert isinstance(python, PythonBackend) and not isinstance(python, TokenizersBackend)
    assert python("hello world", **ASK)["input_ids"] == [101, 7592, 2088, 102]    # knows the vocabulary


@pytest.mark.parametrize("options", OPTION_GRID, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_corpus_matches_the_python_tokenizer(vocab_path, options):
    ours, python = _python_pair(vocab_path, **options)
    for text in SINGLES:
        _assert_compared_equal(ours(text), python(text, **ASK), repr(text[:60]))
    for text, pair in PAIRS:
        _assert_compared_equal(ours(text, pair), python(text, pair, **ASK), repr((text[:30], pair[:30])))


@pytest.mark.parametrize("kwargs", [dict(padding="longest"), dict(padding="max_length", max_length=40, truncation=True),
                                    dict(truncation="longest_first", max_length=24, padding=True),
                                    dict(truncation="only_first", max_length=30, padding=True)],
                         ids=["longest", "max_length-40", "longest_first-24", "only_first-30"])
def test_batches_padded_and_truncated_match_the_python_tokenizer(vocab_path, kwargs):
    ours, python = _python_pair(vocab_path)
    _assert_compared_equal(ours(SINGLES, **kwargs), python(SINGLES, **kwargs, **ASK), "singles")
    if kwargs.get("truncation") != "only_first":   # the corpus' long firsts cannot fit: see below
        firsts, seconds = map(list, zip(*PAIRS))
        _assert_compared_equal(ours(firsts, seconds, **kwargs), python(firsts, seconds, **kwargs, **ASK), "pairs")


def test_documented_differences_from_the_python_tokenizer(vocab_path):
    ours, python = _python_pair(vocab_path)
    # token_type_ids: only when asked.
    assert set(python("hello world")) == {"input_ids", "attention_mask"}
    assert set(ours("hello world")) == {"input_ids", "token_type_ids", "attention_mask"}
    # No offsets.
    assert "offset_mapping" not in python("hello world", return_offsets_mapping=True)
    assert ours("hello world", return_offsets_mapping=True)["offset_mapping"] == [(0, 0), (0, 5), (6, 11), (0, 0)]
    # A truncation that cannot fit: 12 first-text tokens, max_length 8, only the second may go.
    first = "a b c d e f g h i j k l"
    theirs = python(first, "x y", truncation="only_second", max_length=8, **ASK)
    assert python.convert_ids_to_tokens(theirs["input_ids"]) == ["[CLS]", *first.split(), "[SEP]", "[SEP]"]
    assert len(theirs["input_ids"]) == 15 > 8
    with pytest.raises(TokenizerError, match="only_second"):
        ours(first, "x y", truncation="only_second", max_length=8)
