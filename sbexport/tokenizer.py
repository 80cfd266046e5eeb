"""WordPiece tokenizer for SqueezeBERT, built on the `tokenizers` library (Rust backend).

The pipeline is BERT's, assembled here from the library's parts: BertNormalizer (drop control
characters, space out CJK ideographs, lowercase, strip accents), BertPreTokenizer (split on
whitespace and punctuation), WordPiece ("##" continuations, words over 100 characters become
[UNK]), the template [CLS] A [SEP] (B [SEP]) and a WordPiece decoder. On the same vocabulary it
gives the ids, type ids, masks and offsets of transformers' BertTokenizerFast; the few places it
differs on purpose are listed on `SqueezeBertTokenizer`.

Truncation and padding are applied per call to the encodings the backend returns, instead of
switching the backend's enable_truncation / enable_padding state the way transformers does, so
no call changes the tokenizer and one instance can serve several threads.
"""

from __future__ import annotations

import errno
import inspect
import json
import numbers
import os
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from tokenizers import AddedToken, Encoding, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

from .errors import SbexportError

VOCAB_FILE = "vocab.txt"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"

# Constructor keywords naming special tokens, in the order their ids are usually laid out.
SPECIAL_TOKEN_KEYS = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")
# tokenizer_config.json keys that from_pretrained passes on to the constructor.
_CONFIG_KEYS = ("do_lower_case", "do_basic_tokenize", "never_split", "tokenize_chinese_chars",
                "strip_accents", "model_max_length") + SPECIAL_TOKEN_KEYS
# transformers writes model_max_length = 1e30 when a checkpoint sets no limit; anything this big
# means "unset" and leaves the default (512, the size of the position embedding).
_UNSET_MAX_LENGTH = int(1e20)
# WordPiece's longest word, as in BERT: a longer word becomes a single [UNK].
_MAX_WORD_CHARS = 100

_PADDING = {"do_not_pad": None, "longest": "longest", "max_length": "max_length"}
_TRUNCATION = {"do_not_truncate": None, "longest_first": "longest_first",
               "only_first": "only_first", "only_second": "only_second"}
_TENSOR_TYPES = (None, "np", "pt")


def has_tokenizer(folder: str | os.PathLike) -> bool:
    """Whether `folder` holds a tokenizer SqueezeBertTokenizer.from_pretrained can load (a
    tokenizer.json or a vocab.txt): the one test every reader of a folder uses."""
    return os.path.isfile(os.path.join(folder, TOKENIZER_FILE)) or os.path.isfile(os.path.join(folder, VOCAB_FILE))


class TokenizerError(SbexportError, ValueError):
    """A vocabulary, tokenizer file, option or input the tokenizer cannot use; the message
    names the file or argument and the problem."""


class TokenizerFileNotFoundError(SbexportError, FileNotFoundError):
    """A vocab.txt, tokenizer.json or folder that does not exist."""


# -- reading vocabularies ----------------------------------------------------------------------

def _read_text(path: str, what: str) -> str:
    """Read a UTF-8 file.

    Takes the path and a short name of what it should hold ("vocab file", ...); returns the
    text. Raises TokenizerFileNotFoundError if the file is missing, TokenizerError if `path` is a
    folder, cannot be read or the bytes are not UTF-8.
    """
    if os.path.isdir(path):
        raise TokenizerError(f"{what} {path} is a folder, not a file "
                             "(use SqueezeBertTokenizer.from_pretrained for folders)")
    if not os.path.isfile(path):
        raise TokenizerFileNotFoundError(f"{what} not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise TokenizerError(f"{what} {path} is not UTF-8 text ({e.reason} at byte {e.start})") from e
    except OSError as e:   # unreadable: permissions, a folder's worth of I/O errors
        raise TokenizerError(f"{what} {path} cannot be read: {e.strerror or e}") from None


def read_vocab_txt(path: str | os.PathLike) -> dict[str, int]:
    """Read a BERT vocab.txt: one token per line, the id is the line number from 0.

    Returns {token: id}. Raises TokenizerFileNotFoundError if the file is missing and
    TokenizerError if it is empty, not UTF-8, has an empty line or lists a token twice (either
    would leave ids that no token maps back to).
    """
    path = os.fspath(path)
    text = _read_text(path, "vocab file")
    # Only the line ending is stripped: a token may end in other whitespace. "\r\n" is accepted
    # so that a vocab edited on Windows still loads.
    tokens = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    if tokens and tokens[-1] == "":
        tokens.pop()  # the newline that ends the last line
    if not tokens:
        raise TokenizerError(f"vocab file {path} is empty")
    return _index_tokens(tokens, path)


def _index_tokens(tokens: Sequence[str], path: str) -> dict[str, int]:
    """Number a list of tokens from 0; returns {token: id}. Raises TokenizerError naming the
    line of an empty or repeated token."""
    vocab: dict[str, int] = {}
    for index, token in enumerate(tokens):
        if token == "":
            raise TokenizerError(f"vocab file {path} line {index + 1} is empty")
        if token in vocab:
            raise TokenizerError(f"vocab file {path} lists {token!r} twice "
                                 f"(lines {vocab[token] + 1} and {index + 1})")
        vocab[token] = index
    return vocab


def read_tokenizer_json(path: str | os.PathLike) -> tuple[dict[str, int], dict[str, Any]]:
    """Read the vocabulary and BERT options from a `tokenizers` tokenizer.json.

    Returns ({token: id}, options) where options holds the constructor keywords the file
    implies (do_lower_case, strip_accents, tokenize_chinese_chars, do_basic_tokenize,
    unk_token). Raises TokenizerFileNotFoundError if the file is missing and TokenizerError if it
    is not JSON, not a WordPiece model, has ids that are not 0..n-1, a normalizer or
    pre-tokenizer this class cannot rebuild, or added tokens besides the special tokens.
    """
    path = os.fspath(path)
    try:
        data = json.loads(_read_text(path, "tokenizer file"))
    except json.JSONDecodeError as e:
        raise TokenizerError(f"tokenizer file {path} is not valid JSON: {e}") from e
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or model.get("type") != "WordPiece":
        kind = model.get("type") if isinstance(model, dict) else None
        raise TokenizerError(f"tokenizer file {path} holds a {kind or 'missing'} model, "
                             "not the WordPiece model of BERT")
    vocab = _json_vocab(model.get("vocab"), path)
    options = {**_json_normalizer_options(data.get("normalizer"), path),
               **_json_pre_tokenizer_options(data.get("pre_tokenizer"), path)}
    if isinstance(model.get("unk_token"), str):
        options["unk_token"] = model["unk_token"]
    _check_json_added_tokens(data.get("added_tokens") or [], vocab, path)
    return vocab, options


def _json_vocab(raw: Any, path: str) -> dict[str, int]:
    """Check a tokenizer.json vocab ({token: id}) has the ids 0..n-1 once each; returns it.
    Raises TokenizerError otherwise, since vocab.txt and the model's embedding need them."""
    if not isinstance(raw, dict) or not raw:
        raise TokenizerError(f"tokenizer file {path} has an empty or malformed model.vocab")
    ids = list(raw.values())
    if not all(type(i) is int for i in ids) or sorted(ids) != list(range(len(ids))) or "" in raw:
        raise TokenizerError(f"tokenizer file {path}: model.vocab ids are not 0..{len(raw) - 1} "
                             "each used once, or a token is empty")
    return dict(raw)


def _json_normalizer_options(normalizer: Any, path: str) -> dict[str, Any]:
    """Map a tokenizer.json normalizer to constructor keywords; returns them.

    No normalizer is what do_basic_tokenize=False writes. Raises TokenizerError for any other
    normalizer than BertNormalizer, which this class could not reproduce.
    """
    if normalizer is None:
        return {}
    if normalizer.get("type") != "BertNormalizer":
        raise TokenizerError(f"tokenizer file {path} uses a {normalizer.get('type')} normalizer; "
                             "only BertNormalizer (or none) is supported")
    return {"do_lower_case": bool(normalizer.get("lowercase", True)),
            "strip_accents": normalizer.get("strip_accents"),
            "tokenize_chinese_chars": bool(normalizer.get("handle_chinese_chars", True))}


def _json_pre_tokenizer_options(pre_tokenizer: Any, path: str) -> dict[str, Any]:
    """Map a tokenizer.json pre-tokenizer to do_basic_tokenize; returns {"do_basic_tokenize": b}.
    Raises TokenizerError for any other than BertPreTokenizer or WhitespaceSplit."""
    kind = pre_tokenizer.get("type") if isinstance(pre_tokenizer, dict) else None
    if kind == "BertPreTokenizer":
        return {"do_basic_tokenize": True}
    if kind == "WhitespaceSplit":
        return {"do_basic_tokenize": False}
    raise TokenizerError(f"tokenizer file {path} uses a {kind or 'missing'} pre-tokenizer; "
                         "only BertPreTokenizer or WhitespaceSplit is supported")


def _check_json_added_tokens(added: list[dict], vocab: dict[str, int], path: str) -> None:
    """Raise TokenizerError if tokenizer.json adds tokens that are not in the vocabulary or not
    special: this class registers only the special tokens, so others would silently vanish."""
    extra = [t.get("content") for t in added
             if not t.get("special") or vocab.get(t.get("content")) != t.get("id")]
    if extra:
        raise TokenizerError(f"tokenizer file {path} adds tokens beyond the special tokens of its "
                             f"vocabulary: {extra[:5]}; SqueezeBertTokenizer does not support them")


def _read_config(folder: str) -> dict[str, Any]:
    """Read the options this class knows from folder/tokenizer_config.json, if there is one.

    Returns a dict of constructor keywords (special tokens given as AddedToken dicts are reduced
    to their text; a model_max_length meaning "unset" is dropped). Raises TokenizerError if the
    file is not a JSON object.
    """
    path = os.path.join(folder, CONFIG_FILE)
    if not os.path.isfile(path):
        return {}
    try:
        config = json.loads(_read_text(path, "tokenizer config"))
    except json.JSONDecodeError as e:
        raise TokenizerError(f"tokenizer config {path} is not valid JSON: {e}") from e
    if not isinstance(config, dict):
        raise TokenizerError(f"tokenizer config {path} is not a JSON object")
    options = {key: config[key] for key in _CONFIG_KEYS if key in config}
    for key in SPECIAL_TOKEN_KEYS:
        if isinstance(options.get(key), dict):
            options[key] = options[key].get("content")
    length = options.get("model_max_length")
    if isinstance(length, (int, float)) and length >= _UNSET_MAX_LENGTH:
        del options["model_max_length"]
    return options


# -- the backend ---------------------------------------------------------------------------------

def _build_backend(vocab: dict[str, int], special: dict[str, str], do_basic_tokenize: bool,
                   do_lower_case: bool, strip_accents: bool | None,
                   tokenize_chinese_chars: bool) -> Tokenizer:
    """Assemble the `tokenizers` pipeline; returns a Tokenizer with no truncation or padding.

    `special` maps SPECIAL_TOKEN_KEYS to token texts, all present in `vocab`.
    """
    backend = Tokenizer(WordPiece(vocab, unk_token=special["unk_token"],
                                  continuing_subword_prefix="##",
                                  max_input_chars_per_word=_MAX_WORD_CHARS))
    if do_basic_tokenize:
        # strip_accents=None makes the normalizer follow `lowercase`, as in BERT.
        backend.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=tokenize_chinese_chars,
            strip_accents=strip_accents, lowercase=do_lower_case)
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    else:
        # BERT's do_basic_tokenize=False: no cleaning, casing or CJK handling, WordPiece on
        # whitespace-separated words.
        backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    cls, sep = special["cls_token"], special["sep_token"]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])])
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    # As in BertTokenizerFast: special tokens typed in the text are matched before
    # normalisation (so "[CLS]" stays whole but "[cls]" does not) and skipped by decode.
    backend.add_special_tokens([AddedToken(special[key], special=True, normalized=False)
                                for key in SPECIAL_TOKEN_KEYS])
    return backend


# -- call options, batching, truncation, tensors ------------------------------------------------

def _strategy(value: Any, table: dict[str, str | None], default_true: str, name: str) -> str | None:
    """Turn a padding or truncation argument (bool or strategy name) into a strategy name or
    None; raises TokenizerError naming `name` for anything else."""
    if value is True:
        return default_true
    if value is False or value is None:
        return None
    if isinstance(value, str) and value in table:
        return table[value]
    raise TokenizerError(f"{name}={value!r} is not one of True, False, {', '.join(map(repr, table))}")


def _as_batch(text: Any, text_pair: Any) -> tuple[list[str], list[str] | None, bool]:
    """Normalise text / text_pair to lists; returns (texts, pairs or None, batched).

    Raises TypeError for inputs that are not str or lists of str, or a batch paired with a
    single str, and TokenizerError when text and text_pair batches differ in length.
    """
    batched = isinstance(text, (list, tuple))
    texts = list(text) if batched else [text]
    if not all(isinstance(t, str) for t in texts):
        raise TypeError("text must be a str or a list of str, "
                        f"got {type(text).__name__} holding {sorted({type(t).__name__ for t in texts})}")
    if text_pair is None:
        return texts, None, batched
    if batched != isinstance(text_pair, (list, tuple)):
        raise TypeError("text and text_pair must both be str or both be lists of str, "
                        f"got {type(text).__name__} and {type(text_pair).__name__}")
    pairs = list(text_pair) if batched else [text_pair]
    if not all(isinstance(t, str) for t in pairs):
        raise TypeError("text_pair must be a str or a list of str")
    if len(pairs) != len(texts):
        raise TokenizerError(f"text has {len(texts)} items but text_pair has {len(pairs)}")
    return texts, pairs, batched


def _longest_first_lengths(n_first: int, n_second: int, limit: int) -> tuple[int, int]:
    """Lengths that longest_first truncation keeps of a pair, as the Rust backend computes them.

    Takes both lengths and the token budget; returns (kept first, kept second): the longer is
    cut first, and when both must be cut the budget is halved (the odd token to the longer).
    """
    short, long_ = sorted((n_first, n_second))
    long_ = short if short > limit else max(short, limit - short)
    if short + long_ > limit:
        short, long_ = limit // 2, limit // 2 + limit % 2
    return (short, long_) if n_first <= n_second else (long_, short)


def _truncate(first: Encoding, second: Encoding | None, strategy: str, limit: int) -> None:
    """Truncate an encoding (and its pair) in place to `limit` tokens, special tokens excluded.

    Follows the Rust backend's truncate_encodings rule for rule, so results match
    BertTokenizerFast. Raises TokenizerError when only_second has no second text, or when the
    sequence the strategy may cut is too short to reach the limit.
    """
    parts = [e for e in (first, second) if e is not None]
    if limit == 0:
        for e in parts:
            e.truncate(0)
        return
    total = sum(len(e.ids) for e in parts)
    if total <= limit:
        return
    if strategy == "longest_first":
        if second is None:
            first.truncate(limit)
        else:
            n_first, n_second = _longest_first_lengths(len(first.ids), len(second.ids), limit)
            first.truncate(n_first)
            second.truncate(n_second)
        return
    target = first if strategy == "only_first" else second
    if target is None:
        raise TokenizerError(f"truncation='only_second' needs a text_pair: the text has {total} "
                             f"tokens, more than max_length allows ({limit} besides special tokens)")
    excess = total - limit
    if len(target.ids) <= excess:
        which = "first" if target is first else "second"
        raise TokenizerError(
            f"truncation={strategy!r} cannot fit max_length: {excess} tokens must go but the "
            f"{which} sequence has only {len(target.ids)}; use truncation='longest_first'")
    target.truncate(len(target.ids) - excess)


def _columns(encodings: list[Encoding], offsets: bool, special_mask: bool) -> dict[str, list]:
    """Gather per-encoding fields into columns; returns {name: [one list per encoding]}."""
    columns = {"input_ids": [e.ids for e in encodings],
               "token_type_ids": [e.type_ids for e in encodings],
               "attention_mask": [e.attention_mask for e in encodings]}
    if special_mask:
        columns["special_tokens_mask"] = [e.special_tokens_mask for e in encodings]
    if offsets:
        columns["offset_mapping"] = [e.offsets for e in encodings]
    return columns


def _to_tensors(columns: dict[str, list], return_tensors: str) -> dict[str, Any]:
    """Stack columns into int64 arrays, [batch, seq] (offset_mapping [batch, seq, 2]).

    Returns numpy arrays for "np" and torch tensors for "pt". Raises TokenizerError when the
    sequences differ in length, since a ragged batch cannot be one tensor.
    """
    lengths = sorted({len(ids) for ids in columns["input_ids"]})
    if len(lengths) > 1:
        raise TokenizerError(
            f"cannot make {return_tensors!r} tensors from sequences of different lengths "
            f"({lengths[0]} to {lengths[-1]} tokens); pass padding=True or padding='max_length'")
    shape = (len(columns["input_ids"]), lengths[0] if lengths else 0)
    arrays = {key: np.array(value, dtype=np.int64).reshape(shape + ((2,) if key == "offset_mapping" else ()))
              for key, value in columns.items()}
    if return_tensors == "pt":
        import torch  # only needed here; the tokenizer itself does not depend on torch

        return {key: torch.from_numpy(value) for key, value in arrays.items()}
    return arrays


def _check_options(options: dict[str, Any]) -> None:
    """Raise TokenizerError naming the first constructor option of the wrong type."""
    for key in ("do_lower_case", "do_basic_tokenize", "tokenize_chinese_chars"):
        if not isinstance(options[key], bool):
            raise TokenizerError(f"{key} must be True or False, got {options[key]!r}")
    if options["strip_accents"] is not None and not isinstance(options["strip_accents"], bool):
        raise TokenizerError(f"strip_accents must be None, True or False, got {options['strip_accents']!r}")
    length = options["model_max_length"]
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise TokenizerError(f"model_max_length must be a positive int, got {length!r}")
    for key in SPECIAL_TOKEN_KEYS:
        if not isinstance(options[key], str) or not options[key]:
            raise TokenizerError(f"{key} must be a non-empty str, got {options[key]!r}")
    never_split = options["never_split"]
    if isinstance(never_split, str) or not (never_split is None or all(isinstance(t, str) for t in never_split)):
        raise TokenizerError(f"never_split must be a list of str or None, got {never_split!r}")


# -- the tokenizer -----------------------------------------------------------------------------

class SqueezeBertTokenizer:
    """BERT's WordPiece tokenizer (SqueezeBERT uses BERT's vocabulary and pipeline).

    Behaviour equals transformers' BertTokenizerFast on the same vocabulary, except:

    * never_split is accepted and saved but has no effect, exactly as in BertTokenizerFast
      (only the slow Python BertTokenizer honours it). The special tokens are always kept
      whole, because they are registered as added tokens; a warning is given when never_split
      names anything else.
    * do_basic_tokenize=False is implemented (BertTokenizerFast ignores it): no cleaning,
      lowercasing, accent stripping or CJK splitting, WordPiece on whitespace-split words, as in
      the slow BertTokenizer. Whitespace is Unicode's White_Space, so U+001C..U+001F, which
      Python's str.split also treats as whitespace, do not split words here.
    * max_length smaller than the special tokens it must hold raises TokenizerError; the Rust
      backend instead wraps the budget around and silently does not truncate at all.
    * A single text with text_pair="" is encoded as a pair ([CLS] A [SEP] [SEP]), as it is in a
      batch; BertTokenizerFast drops the empty pair in the single case only.
    * return_tensors="np" on a ragged batch raises, like "pt"; transformers returns object arrays.
    * Ids outside the vocabulary raise in decode and convert_ids_to_tokens instead of being
      skipped or returned as None.
    * The vocabulary must contain every special token, or construction raises: a token added
      past the vocabulary would index outside the model's embedding.
    """

    def __init__(self, vocab_file: str | os.PathLike, do_lower_case: bool = True,
                 do_basic_tokenize: bool = True, never_split: Iterable[str] | None = None,
                 unk_token: str = "[UNK]", sep_token: str = "[SEP]", pad_token: str = "[PAD]",
                 cls_token: str = "[CLS]", mask_token: str = "[MASK]",
                 tokenize_chinese_chars: bool = True, strip_accents: bool | None = None,
                 model_max_length: int = 512) -> None:
        """Build the tokenizer from a BERT vocab.txt (one token per line).

        strip_accents=None follows do_lower_case, as in BERT. model_max_length is the length
        used when truncation or padding="max_length" is asked for without max_length. Raises
        TokenizerFileNotFoundError for a missing file and TokenizerError for an unreadable
        vocabulary, one lacking a special token, or an option of the wrong type.
        """
        vocab_file = os.fspath(vocab_file)
        self._setup(read_vocab_txt(vocab_file), vocab_file, dict(
            do_lower_case=do_lower_case, do_basic_tokenize=do_basic_tokenize,
            never_split=never_split, unk_token=unk_token, sep_token=sep_token,
            pad_token=pad_token, cls_token=cls_token, mask_token=mask_token,
            tokenize_chinese_chars=tokenize_chinese_chars, strip_accents=strip_accents,
            model_max_length=model_max_length))

    # -- construction -------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | os.PathLike, **options: Any) -> SqueezeBertTokenizer:
        """Load from a vocab.txt or a tokenizer.json (told apart by the .json suffix).

        For tokenizer.json the lowercasing, accent, CJK, basic-tokenize and unk settings come
        from the file; keyword `options` (the constructor's) override them. Truncation and
        padding stored in the file are ignored, since here they are chosen per call. Raises as
        the constructor, and TokenizerError for a tokenizer.json that read_tokenizer_json rejects.
        """
        path = os.fspath(path)
        if not path.endswith(".json"):
            return cls(path, **options)
        vocab, file_options = read_tokenizer_json(path)
        return cls._from_vocab(vocab, path, {**file_options, **options})

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, **options: Any) -> SqueezeBertTokenizer:
        """Load from a checkpoint folder: tokenizer.json if present, else vocab.txt, with the
        options of tokenizer_config.json when present.

        Precedence: keyword `options`, then tokenizer_config.json, then tokenizer.json (this is
        also how transformers 5 resolves them). Raises TokenizerFileNotFoundError if the folder
        or both vocabulary files are missing, TokenizerError for unreadable files.
        """
        folder = os.fspath(folder)
        if not os.path.isdir(folder):
            raise TokenizerFileNotFoundError(f"tokenizer folder not found: {folder}")
        options = {**_read_config(folder), **options}
        json_path = os.path.join(folder, TOKENIZER_FILE)
        vocab_path = os.path.join(folder, VOCAB_FILE)
        if os.path.isfile(json_path):
            return cls.from_file(json_path, **options)
        if os.path.isfile(vocab_path):
            return cls(vocab_path, **options)
        raise TokenizerFileNotFoundError(f"tokenizer folder {folder} has neither {TOKENIZER_FILE} "
                                         f"nor {VOCAB_FILE}")

    @classmethod
    def _from_vocab(cls, vocab: dict[str, int], source: str,
                    options: dict[str, Any]) -> SqueezeBertTokenizer:
        """Build from an already read vocabulary; `options` are constructor keywords."""
        unknown = set(options) - set(_CONFIG_KEYS)
        if unknown:
            raise TypeError(f"unexpected tokenizer options: {sorted(unknown)}")
        # The constructor's signature is the one place the defaults are written down.
        defaults = {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
                    if p.default is not inspect.Parameter.empty}
        tokenizer = cls.__new__(cls)
        tokenizer._setup(vocab, source, {**defaults, **options})
        return tokenizer

    def _setup(self, vocab: dict[str, int], source: str, options: dict[str, Any]) -> None:
        """Check the options against the vocabulary and build the backend. Raises
        TokenizerError naming `source` when a special token is missing from the vocabulary."""
        never_split = options["never_split"]
        if isinstance(never_split, Iterable) and not isinstance(never_split, str):
            # Made a tuple first: checking a generator would use it up.
            options = {**options, "never_split": tuple(never_split)}
        _check_options(options)
        special = {key: options[key] for key in SPECIAL_TOKEN_KEYS}
        missing = [f"{token!r} ({key})" for key, token in special.items() if token not in vocab]
        if missing:
            raise TokenizerError(f"vocabulary {source} lacks the special token(s) {', '.join(missing)}")
        self.do_lower_case = options["do_lower_case"]
        self.do_basic_tokenize = options["do_basic_tokenize"]
        self.never_split = tuple(options["never_split"] or ())
        self.tokenize_chinese_chars = options["tokenize_chinese_chars"]
        self.strip_accents = options["strip_accents"]
        self.model_max_length = options["model_max_length"]
        self.unk_token, self.sep_token, self.pad_token, self.cls_token, self.mask_token = (
            special["unk_token"], special["sep_token"], special["pad_token"],
            special["cls_token"], special["mask_token"])
        self._vocab = vocab
        self._tokens = sorted(vocab, key=vocab.__getitem__)  # id -> token; ids are 0..n-1
        self._special_ids = frozenset(vocab[token] for token in special.values())
        self._backend = _build_backend(vocab, special, self.do_basic_tokenize, self.do_lower_case,
                                       self.strip_accents, self.tokenize_chinese_chars)
        ignored = sorted(set(self.never_split) - set(special.values()))
        if ignored:
            warnings.warn(f"never_split={ignored} has no effect: like BertTokenizerFast, "
                          "SqueezeBertTokenizer keeps only the special tokens whole", stacklevel=3)

    # -- vocabulary ---------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of tokens in the vocabulary (the special tokens are part of it)."""
        return len(self._vocab)

    @property
    def unk_token_id(self) -> int:
        return self._vocab[self.unk_token]

    @property
    def sep_token_id(self) -> int:
        return self._vocab[self.sep_token]

    @property
    def pad_token_id(self) -> int:
        return self._vocab[self.pad_token]

    @property
    def cls_token_id(self) -> int:
        return self._vocab[self.cls_token]

    @property
    def mask_token_id(self) -> int:
        return self._vocab[self.mask_token]

    def get_vocab(self) -> dict[str, int]:
        """Returns a copy of the vocabulary, {token: id}."""
        return dict(self._vocab)

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        """Map a token, or a list of tokens, to ids; tokens not in the vocabulary map to the
        unk id. Returns an int for a str and a list for a list."""
        if isinstance(tokens, str):
            return self._vocab.get(tokens, self.unk_token_id)
        return [self._vocab.get(token, self.unk_token_id) for token in tokens]

    def convert_ids_to_tokens(self, ids: int | Iterable[int]) -> str | list[str]:
        """Map an id, or ids, to tokens; returns a str for an int and a list otherwise.
        Raises TokenizerError for an id outside the vocabulary."""
        if isinstance(ids, numbers.Integral):
            return self._tokens[self._check_ids([ids])[0]]
        return [self._tokens[i] for i in self._check_ids(ids)]

    def _check_ids(self, ids: Iterable[int]) -> list[int]:
        """Returns ids as a list of Python ints (numpy and torch integers included); raises
        TokenizerError if one is outside 0..vocab_size-1."""
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < len(self._tokens)]
        if bad:
            raise TokenizerError(f"token id(s) {bad[:5]} outside the vocabulary (0..{len(self._tokens) - 1})")
        return ids

    # -- text to tokens and back --------------------------------------------------------

    def tokenize(self, text: str) -> list[str]:
        """Split text into WordPiece tokens, without special tokens; returns the tokens."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self._backend.encode(text, add_special_tokens=False).tokens

    def decode(self, ids: int | Iterable[int], skip_special_tokens: bool = True) -> str:
        """Turn ids back into text: "##" pieces are joined and spaces before punctuation
        removed. Takes ids (list, 1-D array or tensor); returns the text. Raises TokenizerError
        for an id outside the vocabulary."""
        ids = self._check_ids([ids] if isinstance(ids, numbers.Integral) else ids)
        return self._backend.decode(ids, skip_special_tokens=skip_special_tokens)

    # -- special tokens -----------------------------------------------------------------

    def build_inputs_with_special_tokens(self, ids0: list[int], ids1: list[int] | None = None) -> list[int]:
        """Returns [CLS] ids0 [SEP], or [CLS] ids0 [SEP] ids1 [SEP] for a pair."""
        ids = [self.cls_token_id, *ids0, self.sep_token_id]
        return ids if ids1 is None else [*ids, *ids1, self.sep_token_id]

    def get_special_tokens_mask(self, ids0: list[int], ids1: list[int] | None = None,
                                already_has_special_tokens: bool = False) -> list[int]:
        """1 where build_inputs_with_special_tokens puts a special token, 0 elsewhere.

        With already_has_special_tokens=True, ids0 is a finished sequence and the mask marks
        every special token id in it ([UNK] included, as in transformers). Raises
        TokenizerError if ids1 is given then.
        """
        if already_has_special_tokens:
            if ids1 is not None:
                raise TokenizerError("ids1 must be None when already_has_special_tokens=True: "
                                     "ids0 is then the whole formatted sequence")
            return [1 if int(i) in self._special_ids else 0 for i in ids0]
        mask = [1, *([0] * len(ids0)), 1]
        return mask if ids1 is None else [*mask, *([0] * len(ids1)), 1]

    def create_token_type_ids_from_sequences(self, ids0: list[int],
                                             ids1: list[int] | None = None) -> list[int]:
        """Segment ids for build_inputs_with_special_tokens: 0 for [CLS] A [SEP], 1 for B [SEP]."""
        types = [0] * (len(ids0) + 2)
        return types if ids1 is None else [*types, *([1] * (len(ids1) + 1))]

    # -- encoding -----------------------------------------------------------------------

    def __call__(self, text: str | Sequence[str], text_pair: str | Sequence[str] | None = None, *,
                 padding: bool | str = False, truncation: bool | str | None = None,
                 max_length: int | None = None, return_tensors: str | None = None,
                 return_offsets_mapping: bool = False, return_special_tokens_mask: bool = False,
                 add_special_tokens: bool = True) -> dict[str, Any]:
        """Encode a text or a pair, or a batch of either (lists).

        padding: False / "do_not_pad", True / "longest" (to the longest in the batch) or
        "max_length"; always on the right, since the position embeddings are absolute.
        truncation: False / "do_not_truncate", True / "longest_first", "only_first" or
        "only_second", as in transformers. None (the default) truncates to max_length only when
        max_length is given without padding, as transformers does. max_length defaults to
        model_max_length when truncation or padding="max_length" needs it.

        Returns a dict with input_ids, token_type_ids, attention_mask, and special_tokens_mask /
        offset_mapping ((start, end) character spans; (0, 0) for special tokens) when asked:
        lists of ints (a list per text for a batch), or int64 arrays / tensors of shape
        [batch, seq] ([batch, seq, 2] for offsets) for return_tensors "np" / "pt".
        Raises TypeError for inputs that are not str / lists of str and TokenizerError for bad
        options, truncation that cannot be done, or ragged batches asked for as tensors.
        """
        texts, pairs, batched = _as_batch(text, text_pair)
        pad, trunc, max_length = self._plan(padding, truncation, max_length)
        if return_tensors not in _TENSOR_TYPES:
            raise TokenizerError(f"return_tensors={return_tensors!r} is not one of {_TENSOR_TYPES}")
        encodings = self._encode(texts, pairs, trunc, max_length, add_special_tokens)
        if pad is not None and encodings:
            length = max_length if pad == "max_length" else max(len(e.ids) for e in encodings)
            for e in encodings:
                e.pad(length, direction="right", pad_id=self.pad_token_id, pad_type_id=0,
                      pad_token=self.pad_token)
        columns = _columns(encodings, return_offsets_mapping, return_special_tokens_mask)
        if return_tensors is not None:
            return _to_tensors(columns, return_tensors)
        return columns if batched else {key: value[0] for key, value in columns.items()}

    def _plan(self, padding: Any, truncation: Any, max_length: Any) -> tuple[str | None, str | None, int | None]:
        """Resolve the padding and truncation arguments; returns (padding strategy, truncation
        strategy, max_length), with model_max_length filled in where a strategy needs a length.
        Raises TokenizerError for unknown strategies or a max_length that is not an int >= 0."""
        if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int)
                                       or max_length < 0):
            raise TokenizerError(f"max_length must be an int >= 0 or None, got {max_length!r}")
        if truncation is None and padding is False and max_length is not None:
            truncation = True  # transformers' rule: a bare max_length means truncate to it
        pad = _strategy(padding, _PADDING, "longest", "padding")
        trunc = _strategy(truncation, _TRUNCATION, "longest_first", "truncation")
        if max_length is None and (trunc is not None or pad == "max_length"):
            max_length = self.model_max_length
        return pad, trunc, max_length

    def _encode(self, texts: list[str], pairs: list[str] | None, truncation: str | None,
                max_length: int | None, add_special_tokens: bool) -> list[Encoding]:
        """Encode texts (and pairs) without padding; returns one Encoding per text with the
        special tokens added and truncation applied. Raises as _truncate."""
        budget = None  # tokens left for the texts once the special tokens are placed
        if truncation is not None:
            n_special = self._backend.num_special_tokens_to_add(pairs is not None) if add_special_tokens else 0
            budget = max_length - n_special
            if budget < 0:
                raise TokenizerError(f"max_length={max_length} cannot hold the {n_special} special "
                                     f"tokens of a {'pair' if pairs is not None else 'single text'}")
        firsts = self._backend.encode_batch(texts, add_special_tokens=False)
        seconds = (self._backend.encode_batch(pairs, add_special_tokens=False)
                   if pairs is not None else [None] * len(firsts))
        out = []
        for first, second in zip(firsts, seconds):
            if budget is not None:
                _truncate(first, second, truncation, budget)
            out.append(self._backend.post_process(first, second, add_special_tokens=add_special_tokens))
        return out

    # -- saving -------------------------------------------------------------------------

    def save_vocabulary(self, folder: str | os.PathLike, filename_prefix: str | None = None) -> tuple[str]:
        """Write vocab.txt (or <prefix>-vocab.txt) into an existing folder, one token per line
        in id order. Returns (path,). Raises TokenizerFileNotFoundError if the folder does not
        exist."""
        folder = os.fspath(folder)
        if not os.path.isdir(folder):
            raise TokenizerFileNotFoundError(f"folder to save the vocabulary in not found: {folder}")
        name = f"{filename_prefix}-{VOCAB_FILE}" if filename_prefix else VOCAB_FILE
        path = os.path.join(folder, name)
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write("".join(token + "\n" for token in self._tokens))
        return (path,)

    def save_pretrained(self, folder: str | os.PathLike) -> tuple[str, str, str]:
        """Write tokenizer.json, vocab.txt and tokenizer_config.json into `folder` (created if
        needed), so that this class and transformers' BertTokenizerFast.from_pretrained load it.
        Returns the three paths; raises OSError when one cannot be written."""
        folder = os.fspath(folder)
        os.makedirs(folder, exist_ok=True)
        json_path = os.path.join(folder, TOKENIZER_FILE)
        try:
            self._backend.save(json_path)
        except Exception as e:  # the Rust backend raises a bare Exception ("... (os error 28)")
            raise OSError(errno.EIO, str(e), json_path) from None
        (vocab_path,) = self.save_vocabulary(folder)
        config_path = os.path.join(folder, CONFIG_FILE)
        with open(config_path, "w", encoding="utf-8") as f:
            json.dump(self._config(), f, indent=2, ensure_ascii=False)
            f.write("\n")
        return json_path, vocab_path, config_path

    def _config(self) -> dict[str, Any]:
        """The tokenizer_config.json contents: every constructor option, plus the class name
        transformers' AutoTokenizer needs and its decode setting (no extra space clean-up)."""
        return {"tokenizer_class": "BertTokenizer", "do_lower_case": self.do_lower_case,
                "do_basic_tokenize": self.do_basic_tokenize,
                "never_split": list(self.never_split) or None,
                "unk_token": self.unk_token, "sep_token": self.sep_token,
                "pad_token": self.pad_token, "cls_token": self.cls_token,
                "mask_token": self.mask_token, "tokenize_chinese_chars": self.tokenize_chinese_chars,
                "strip_accents": self.strip_accents, "model_max_length": self.model_max_length,
                "clean_up_tokenization_spaces": False}

    def __repr__(self) -> str:
        return (f"SqueezeBertTokenizer(vocab_size={self.vocab_size}, do_lower_case={self.do_lower_case}, "
                f"strip_accents={self.strip_accents}, model_max_length={self.model_max_length})")

