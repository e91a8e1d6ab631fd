"""Typed, validated configuration: one frozen dataclass per YAML section.

Every default lives here, as a dataclass field. The YAML file mirrors these classes; the loader
checks every key and value, reports all problems at once (file, dotted key, what is allowed,
a close match for misspellings) and returns frozen objects, so no raw dict leaks past it.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import yaml

from s2s.errors import ConfigError
from s2s.tokens import SPECIAL_PIECES  # never a corpus tag


def _option(default: Any, *, minimum: float | None = None, maximum: float | None = None,
            exclusive_minimum: bool = False) -> Any:
    """A dataclass field with an allowed numeric range, checked by the loader."""
    return field(default=default, metadata={"minimum": minimum, "maximum": maximum,
                                            "exclusive_minimum": exclusive_minimum})




@dataclass(frozen=True)
class TrainingCorpus:
    """One corpus of training pairs. In YAML a plain path stands for ``{path: ...}``."""

    path: Path  # path prefix: <path>.<src_lang> and <path>.<tgt_lang> (or .gz, .xz)
    # how often its pairs are drawn per epoch, relative to its size: 1 = each pair once,
    # 3 = each pair three times, 0.5 = a fresh random half of them every epoch
    weight: float = _option(1.0, minimum=0.0, exclusive_minimum=True)
    # a piece put before each of its source sentences (such as <bt> for back-translated
    # pairs): reserved in the source vocabulary, never produced in translations; "" = none
    tag: str = ""


@dataclass(frozen=True)
class DataConfig:
    """Where the parallel text is and how it is cleaned and filtered."""

    src_lang: str  # source language code, its files' suffix: en reads <prefix>.en
    tgt_lang: str  # target language code (zh and ja change normalisation and BLEU)
    # one corpus (a path prefix) or a list of them, each a path or {path, weight, tag}
    train: tuple[TrainingCorpus, ...]
    valid: Path  # path prefix of the validation split: <valid>.<src_lang>, <valid>.<tgt_lang>
    test: Path  # path prefix of the test split, read the same way
    # Unicode normalisation of each side. auto: NFC for Chinese and Japanese, which keeps their
    # full-width punctuation (，。？！), NFKC (which also folds compatibility characters such
    # as full-width Latin letters and ligatures) for every other language.
    normalization: Literal["auto", "nfkc", "nfc", "none"] = "auto"
    invalid_utf8: Literal["error", "replace"] = "error"  # replace: bad bytes become U+FFFD
    max_chars: int = _option(1000, minimum=1)  # training pairs with a longer side are dropped
    # training pairs with a longer side in subword tokens are dropped; translate splits longer
    # inputs at sentence boundaries (or into chunks) and joins the pieces' translations
    max_tokens: int = _option(128, minimum=1)
    max_length_ratio: float = _option(3.0, minimum=1.0)  # longer/shorter side, in tokens
    dedupe: bool = True  # drop exact duplicate training pairs
    # drop training pairs with a side in the wrong script for its language (Chinese or
    # Japanese without a CJK character, any other language with one: subtitle translators'
    # notes) or with control characters
    script_filter: bool = True
    # languages whose valid and test files are Moses-tokenised and HTML-escaped, as many
    # published test sets are ("it &apos;s"): their lines are turned back into plain text
    # before the model sees them, and references in them are detokenised for sacreBLEU
    moses_tokenized: tuple[str, ...] = ()
    # several references per line (files aligned with the split's source), scored in place of
    # <valid>.<tgt_lang> and <test>.<tgt_lang>; empty = that one file
    valid_references: tuple[Path, ...] = ()
    test_references: tuple[Path, ...] = ()  # the same for the test split
    # processes that clean and encode the training pairs in `s2s prepare`; 0 = one per core
    # this process may use. The prepared files are the same whatever the count.
    workers: int = _option(0, minimum=0, maximum=256)

    def corpus_key(self, index: int) -> str:
        """The dotted key of training corpus ``index``, for messages: data.train[1], or
        data.train when there is one."""
        return f"data.train[{index}]" if len(self.train) > 1 else "data.train"

    @property
    def tags(self) -> tuple[str, ...]:
        """The training corpora's distinct tags, in the order they first appear."""
        return tuple(dict.fromkeys(corpus.tag for corpus in self.train if corpus.tag))


@dataclass(frozen=True)
class VocabConfig:
    """The sentencepiece models: one per language, or one joint model."""

    model_type: Literal["unigram", "bpe"] = "unigram"  # sentencepiece's algorithm
    joint: bool = False  # one vocabulary for both languages (then src_size = tgt_size)
    src_size: int = _option(8000, minimum=8)  # pieces in the source vocabulary
    tgt_size: int = _option(8000, minimum=8)  # pieces in the target vocabulary
    # share of the characters the vocabulary covers; the rare rest is spelled in bytes
    character_coverage: float = _option(0.9995, minimum=0.9, maximum=1.0)
    byte_fallback: bool = True  # unknown characters become bytes, so nothing is ever <unk>
    max_sentences: int = _option(2_000_000, minimum=100)  # sentences sampled to train the model
    # sentencepiece's result depends on its thread count, so it is a setting, not the machine's
    # core count: the same corpus and config give the same vocabulary everywhere
    threads: int = _option(4, minimum=1, maximum=256)
    # subword regularisation (s2s.data.resegment): each training batch's sentences are cut
    # into pieces drawn from the model, anew every time; 0 = off (the best segmentation).
    # unigram: one of the sampling_nbest best segmentations, drawn with chance proportional
    # to its likelihood to the power alpha (small: flatter; 0.1 to 0.5 are usual);
    # bpe: alpha is BPE-dropout's chance to skip each merge (0.1 is usual)
    sampling_alpha: float = _option(0.0, minimum=0.0, maximum=1.0)
    sampling_nbest: int = _option(16, minimum=2, maximum=1000)  # unigram: how many to draw from


@dataclass(frozen=True)
class ModelConfig:
    """The attentional recurrent encoder-decoder."""

    # lstm; gru; rnn: the plain tanh recurrence h = tanh(W x + U h + b)
    cell: Literal["lstm", "gru", "rnn"] = "lstm"
    embed_size: int = _option(256, minimum=1)  # width of the source and target embeddings
    encoder_layers: int = _option(2, minimum=1)  # bidirectional recurrent layers
    encoder_hidden: int = _option(256, minimum=1)  # per direction
    decoder_layers: int = _option(2, minimum=1)  # recurrent layers of the decoder
    decoder_hidden: int = _option(512, minimum=1)  # width of the decoder's layers
    # how the decoder scores encoder states: Luong's general or dot, or Bahdanau's additive
    attention: Literal["general", "dot", "bahdanau"] = "general"
    # feed the last attentional output into the next step (Luong); false lets the decoder run
    # over the whole target in one fused call, which trains faster
    input_feeding: bool = True
    tie_embeddings: bool = True  # decoder input and output embeddings (and src too when joint)
    dropout: float = _option(0.3, minimum=0.0, maximum=0.95)  # between layers and before output
    embed_dropout: float = _option(0.1, minimum=0.0, maximum=0.95)  # on the embeddings
    # every weight but the embeddings starts uniform in [-init_range, init_range], as in
    # fairseq's and OpenNMT-py's LSTMs; 0 keeps PyTorch's defaults (±1/sqrt(fan-in)), which
    # learn slower at first: valid ppl 213 against 134 after 200 updates (BENCHMARKS.md)
    init_range: float = _option(0.1, minimum=0.0, maximum=1.0)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, batching, validation and checkpointing."""

    seed: int = 1  # weights, dropout, batch order and subword draws all follow it
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # auto: bf16 where the device has bf16 kernels (recent GPUs; CPUs with AVX-512 BF16 or
    # AMX), else fp32; checkpoints record the precision it became
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    # CPU threads of each process for every command (training, evaluate, translate); 0 = this
    # machine's cores shared among the processes started on it
    threads: int = _option(0, minimum=0)
    # a batch holds as many sentences as fit: count x (longer side of its longest pair + 1)
    batch_tokens: int = _option(2000, minimum=16)
    accumulate: int = _option(1, minimum=1)  # batches per optimizer step
    optimizer: Literal["adam", "adamw"] = "adam"  # adamw: weight decay decoupled from the rate
    lr: float = _option(1e-3, minimum=0.0, exclusive_minimum=True)  # peak learning rate
    weight_decay: float = _option(0.0, minimum=0.0)  # 0 = none
    # linear: from lr down to min_lr at the end of the run's budget, the first of max_steps,
    # max_epochs and max_minutes (whose steps are projected from the pace so far), falling over
    # the budget's last anneal_fraction (1: all of it after the warm-up)
    lr_schedule: Literal["constant", "inverse_sqrt", "plateau", "linear"] = "plateau"
    warmup_steps: int = _option(0, minimum=0)  # steps of linear warm-up from 0 to lr
    # linear schedule: the share of the budget, at its end, over which the rate falls
    anneal_fraction: float = _option(1.0, minimum=0.0, maximum=1.0, exclusive_minimum=True)
    # plateau schedule: the rate is multiplied by this when validation stops improving
    plateau_factor: float = _option(0.5, minimum=0.0, maximum=1.0, exclusive_minimum=True)
    plateau_patience: int = _option(1, minimum=0)  # validations without improvement
    min_lr: float = _option(1e-5, minimum=0.0)  # the rate never falls below it
    clip_norm: float = _option(1.0, minimum=0.0)  # 0 disables clipping
    label_smoothing: float = _option(0.1, minimum=0.0, maximum=0.99)  # 0 = plain cross-entropy
    # a loss on attention's mass away from the diagonal, fading from weight 1 to 0 over this
    # many updates, so that no start locks onto a reversed alignment; 0 = none
    guided_attention_steps: int = _option(0, minimum=0)
    max_steps: int = _option(0, minimum=0)  # 0 = no limit
    max_epochs: int = _option(30, minimum=0)  # 0 = no limit
    # training-time budget of the whole run, counted across resumes; 0 = no limit
    max_minutes: float = _option(0.0, minimum=0.0)
    log_every: int = _option(100, minimum=1)  # steps between progress lines
    valid_every: int = _option(1000, minimum=1)  # steps between validations
    valid_beam_size: int = _option(1, minimum=1)  # beam of validation's decoding; 1 = greedy
    # the validation score that picks best.pt, lowers the rate (plateau) and stops early
    early_stopping_metric: Literal["bleu", "chrf", "loss"] = "bleu"
    patience: int = _option(0, minimum=0)  # validations without improvement; 0 = never stop early
    keep_last: int = _option(3, minimum=1)  # step checkpoints kept besides best and last
    # when training ends, average the newest this many step checkpoints into avg.pt and
    # validate it; best.pt becomes the average when it validates better. 0 = off
    average_last: int = _option(0, minimum=0)
    # also write RUN_DIR/tensorboard (needs the tensorboard package: pip install s2s[tensorboard])
    tensorboard: bool = False


@dataclass(frozen=True)
class DecodeConfig:
    """Search settings for evaluate and translate."""

    beam_size: int = _option(5, minimum=1)  # 1 = greedy search
    nbest: int = _option(1, minimum=1)  # translations per line (at most beam_size)
    # a hypothesis' log-probability is divided by ((5 + length) / 6) ** alpha (gnmt), by its
    # length (average) or by nothing (none), so that finished ones of different lengths compare
    length_penalty: Literal["gnmt", "average", "none"] = "gnmt"
    alpha: float = _option(0.6, minimum=0.0)  # GNMT length-penalty exponent
    max_len_a: float = _option(1.5, minimum=0.0)  # output limit: a * source_length + b
    max_len_b: int = _option(10, minimum=1)  # see max_len_a
    no_repeat_ngram: int = _option(0, minimum=0)  # block repeated n-grams of this size; 0 = off
    # sentences per decoding batch: count x (longest source + 1) x beam_size stays within it
    batch_tokens: int = _option(6000, minimum=16)
    # weights' dtype; auto: as trained; int8: quantised weights on the CPU (LSTM and GRU)
    precision: Literal["auto", "fp32", "bf16", "int8"] = "auto"
    # vocabulary shortlist (s2s.model.shortlist): each sentence decodes over the special pieces,
    # the shortlist_frequent most frequent target pieces and the `shortlist` pieces most
    # associated with each of its source pieces in the training data; 0: the whole vocabulary.
    # 2000 frequent rather than 1000: within 0.2 BLEU of the whole vocabulary on every test set
    # measured (1000: up to 0.55 below) for about 5% of the shortlist's speed, since a batch's
    # union of candidates grows little (BENCHMARKS.md, "The shortlist's normaliser")
    shortlist: int = _option(0, minimum=0, maximum=100)
    shortlist_frequent: int = _option(2000, minimum=0, maximum=2000)  # see shortlist
    bleu_tokenize: str = "auto"  # sacrebleu tokenizer; auto = zh for Chinese, 13a otherwise
    bleu_lowercase: bool = False  # case-insensitive BLEU and chrF (for lowercased references)
    # also report BLEU on Moses-tokenised text (tokenizer.perl -a, then multi-bleu.perl's
    # plain split), the metric of many published tables; for languages Moses tokenises
    tokenized_bleu: bool = False
    # how an ensemble's next-token distributions combine: the weighted mean of probabilities
    # (prob, as fairseq) or of log-probabilities (logprob, as OpenNMT-py)
    ensemble_combine: Literal["prob", "logprob"] = "prob"
    # sampling search: each token drawn from the model's distribution (made sharper or flatter
    # by the temperature, cut to the top_k likeliest tokens (0: no cut) and to the smallest set
    # whose probability reaches top_p), nbest samples per line, reproducible from the seed and
    # the line alone; beam_size must be 1
    sampling: bool = False
    temperature: float = _option(1.0, minimum=0.0, exclusive_minimum=True)  # see sampling
    top_k: int = _option(0, minimum=0)  # see sampling
    top_p: float = _option(1.0, minimum=0.0, maximum=1.0, exclusive_minimum=True)  # see sampling
    seed: int = _option(1, minimum=0)  # sampling's seed


@dataclass(frozen=True)
class Config:
    """A whole s2s experiment, as read from one YAML file."""

    run_dir: Path  # where prepared data, checkpoints, metrics and evaluations go
    data: DataConfig
    vocab: VocabConfig = field(default_factory=VocabConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)


class _StrictLoader(yaml.SafeLoader):
    """YAML 1.2-style scalars: only true/false are booleans, and 1e-3 is a float."""


_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"))
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*)?(?:\.\d*)?[eE][-+]?\d+$|^[-+]?\d[\d_]*\.\d*$|^[-+]?\.\d+$"),
    list("-+0123456789."))


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML text with s2s's scalar rules; syntax errors name the file, line and column."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None


@dataclass(frozen=True)
class Override:
    """One setting changed from outside the config file: ``--set section.key=value`` (the
    value is text, read as YAML), or a command-line option such as ``--beam 3`` (a typed
    value). It is checked by the same rules as the file's value, and an error names
    ``origin``, what the user typed."""

    key: str  # dotted: section.key
    value: Any
    origin: str

    @classmethod
    def parse(cls, text: str) -> "Override":
        """``section.key=value`` as given to ``--set``."""
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {text!r}: expected section.key=value")
        origin = f"--set {key}={value}"
        return cls(key, parse_yaml(value, origin), origin)

    @classmethod
    def option(cls, key: str, value: Any, option: str) -> "Override":
        """The value of command-line ``option`` for setting ``key``."""
        shown = str(value).lower() if isinstance(value, bool) else value
        return cls(key, value, f"{option} {shown}")


Overrides = Sequence["str | Override"]  # --set text or typed options, applied in order


def load_config(path: Path | str, overrides: Overrides = ()) -> Config:
    """Read, override and validate a config file; raise ConfigError listing every problem.

    Each problem names where its value came from: the file, or the override (``--set`` or
    the command-line option) that set it.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "not found"
        raise ConfigError(f"{path}: config file {what}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read config file: {error}") from None
    raw = parse_yaml(text, str(path))
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping of sections, "
                          f"not a {_yaml_type_name(raw)}")
    return config_from_dict(raw, source=str(path), overrides=overrides)


def config_from_dict(raw: dict[str, Any], *, source: str = "<config>",
                     overrides: Overrides = ()) -> Config:
    """Validate a plain mapping (as parsed from YAML) into a Config."""
    raw, origins = _apply_overrides(raw, overrides)
    return _checked(Config, raw, "", _consistency_errors, origins, source)


def changed_decode(decode: DecodeConfig, overrides: Overrides) -> DecodeConfig:
    """``decode`` with ``overrides`` (of ``decode.*`` keys) applied, checked by the rules of
    a config's decode section: a ConfigError names each bad value by its override's origin."""
    raw, origins = _apply_overrides({"decode": config_to_dict(decode)}, overrides)
    return _checked(DecodeConfig, raw["decode"], "decode.", _decode_errors, origins, "decode")


def _checked(cls: type, raw: Any, prefix: str, consistency: Callable[[Any], list[str]],
             origins: dict[str, str], source: str) -> Any:
    """``raw`` built into ``cls`` and checked, key by key and then for ``consistency``; a
    ConfigError lists every problem, each named by where its value came from."""
    errors: list[str] = []
    built = _build(cls, raw, prefix, errors)
    if not errors:
        errors.extend(consistency(built))
    if errors:
        raise ConfigError("\n".join(f"{_origin(message, origins, source)}: {message}"
                                     for message in errors))
    return built


def _origin(message: str, origins: dict[str, str], source: str) -> str:
    """Where the value an error message is about came from: an override, else the file."""
    dotted = re.sub(r"\[\d+\]", "", message.split(":", 1)[0])
    while dotted:
        if dotted in origins:
            return origins[dotted]
        dotted = dotted.rpartition(".")[0]
    return source


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain YAML-ready data for a config: paths become strings."""
    result: dict[str, Any] = {}
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if dataclasses.is_dataclass(value):
            value = config_to_dict(value)
        elif isinstance(value, tuple):
            value = (_items_to_yaml(value) if value and dataclasses.is_dataclass(value[0])
                     else [str(item) if isinstance(item, Path) else item for item in value])
        elif isinstance(value, Path):
            value = str(value)
        result[item.name] = value
    return result


def _items_to_yaml(items: tuple[Any, ...]) -> Any:
    """A list of config items, each written as its path alone while its other fields keep
    their defaults (and one such item as that path), as a user would write them."""
    written = []
    for item in items:
        fields = config_to_dict(item)
        defaults = {field.name: field.default for field in dataclasses.fields(item)}
        plain = all(value == defaults[name] for name, value in fields.items() if name != "path")
        written.append(fields["path"] if plain else fields)
    return written[0] if len(written) == 1 and isinstance(written[0], str) else written


def dump_config(config: Config) -> str:
    """The resolved config as YAML text, in section order."""
    return yaml.safe_dump(config_to_dict(config), sort_keys=False, allow_unicode=True)


def _apply_overrides(raw: dict[str, Any], overrides: Overrides
                     ) -> tuple[dict[str, Any], dict[str, str]]:
    """A copy of ``raw`` with each override set, and for each overridden dotted key how the
    user wrote it (``--set key=value``, or ``--beam 3``)."""
    result = {key: dict(value) if isinstance(value, dict) else value for key, value in raw.items()}
    origins: dict[str, str] = {}
    for item in overrides:
        override = Override.parse(item) if isinstance(item, str) else item
        origins[override.key] = override.origin
        *sections, leaf = override.key.split(".")
        target = result
        for section in sections:
            child = target.setdefault(section, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{override.origin}: {section} is not a section")
            target = child
        target[leaf] = override.value
    return result, origins


def _build(cls: type, raw: Any, prefix: str, errors: list[str]) -> Any:
    """Turn a mapping into dataclass ``cls``, appending every problem found to ``errors``."""
    if not isinstance(raw, dict):
        errors.append(f"{prefix.rstrip('.') or 'config'}: expected a mapping, "
                      f"got {_yaml_type_name(raw)}")
        return None
    fields = {item.name: item for item in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            errors.append(f"{prefix}{key}: unknown key{_suggestion(str(key), fields)}")
    values: dict[str, Any] = {}
    for name, item in fields.items():
        dotted = f"{prefix}{name}"
        if name not in raw:
            if item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING:
                errors.append(f"{dotted}: required key is missing")
            continue
        if dataclasses.is_dataclass(hints[name]):
            values[name] = _build(hints[name], raw[name], dotted + ".", errors)
        else:
            values[name] = _convert(raw[name], hints[name], item.metadata, dotted, errors)
    try:
        return cls(**values)
    except TypeError:  # a required key was missing; already reported
        return None


def _convert(value: Any, hint: Any, limits: Any, dotted: str, errors: list[str]) -> Any:
    """Check one scalar against its declared type and range; return the typed value."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        item_type = typing.get_args(hint)[0]
        if dataclasses.is_dataclass(item_type):
            return _convert_items(value, item_type, dotted, errors)
        return _convert_scalars(value, item_type, dotted, errors)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            choices = ", ".join(map(str, allowed))
            hint_text = _suggestion(str(value), allowed)
            errors.append(f"{dotted}: {value!r} is not allowed; choose one of {choices}{hint_text}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            errors.append(f"{dotted}: expected true or false, got {_describe(value)}")
        return value
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                hint is int and not isinstance(value, int)):
            errors.append(f"{dotted}: expected {'an integer' if hint is int else 'a number'}, "
                          f"got {_describe(value)}")
            return value
        _check_range(hint(value), limits, dotted, errors)
        return hint(value)
    if hint in (str, Path):
        if not isinstance(value, str) or not value:
            errors.append(f"{dotted}: expected a non-empty string, got {_describe(value)}")
            return value
        return Path(value).expanduser().absolute() if hint is Path else value
    raise TypeError(f"unsupported config type {hint!r} for {dotted}")  # a bug in this module


def _convert_items(value: Any, item_type: type, dotted: str, errors: list[str]) -> Any:
    """A list of dataclass items (one item alone stands for a list of one); an item given as a
    string is its ``path``."""
    listed = isinstance(value, list)
    items = value if listed else [value]
    if not items:
        errors.append(f"{dotted}: expected at least one entry, got an empty list")
    result = []
    for index, item in enumerate(items):
        where = f"{dotted}[{index}]" if listed else dotted
        if isinstance(item, str):
            item = {"path": item}
        result.append(_build(item_type, item, where + ".", errors))
    return tuple(result)


def _convert_scalars(value: Any, item_type: type, dotted: str, errors: list[str]) -> Any:
    """A list of plain values (one value alone stands for a list of one)."""
    items = value if isinstance(value, list) else [value]
    return tuple(_convert(item, item_type, {}, f"{dotted}[{index}]", errors)
                 for index, item in enumerate(items))


def _check_range(value: float, limits: Any, dotted: str, errors: list[str]) -> None:
    minimum, maximum = limits.get("minimum"), limits.get("maximum")
    if minimum is not None:
        if limits.get("exclusive_minimum") and value <= minimum:
            errors.append(f"{dotted}: must be greater than {minimum}, got {value}")
        elif value < minimum:
            errors.append(f"{dotted}: must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        errors.append(f"{dotted}: must be at most {maximum}, got {value}")


_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


def _decode_errors(decode: DecodeConfig) -> list[str]:
    """Decode settings that are each valid but contradict one another."""
    if decode.sampling and decode.beam_size > 1:
        return [f"decode.sampling: sampling draws one token at a time, not a beam; set "
                f"decode.beam_size to 1 (it is {decode.beam_size}) and ask for several "
                "samples with decode.nbest"]
    if decode.nbest > decode.beam_size and not decode.sampling:
        return [f"decode.nbest: {decode.nbest} is larger than decode.beam_size "
                f"({decode.beam_size}); a beam cannot return more hypotheses than it keeps"]
    return []


def _consistency_errors(config: Config) -> list[str]:
    """Values that are each valid but contradict one another."""
    errors = []
    if not _DEVICE_PATTERN.match(config.train.device):
        errors.append(f"train.device: {config.train.device!r} is not allowed; "
                      "choose auto, cpu, cuda or cuda:N")
    if config.data.src_lang == config.data.tgt_lang:
        errors.append(f"data.tgt_lang: must differ from data.src_lang ({config.data.src_lang!r}), "
                      "or the source and target files would be the same")
    errors.extend(_tag_errors(config.data))
    errors.extend(_decode_errors(config.decode))
    if config.vocab.joint and config.vocab.src_size != config.vocab.tgt_size:
        errors.append(f"vocab.tgt_size: a joint vocabulary has one size, but src_size is "
                      f"{config.vocab.src_size} and tgt_size is {config.vocab.tgt_size}")
    model = config.model
    if model.attention == "dot" and 2 * model.encoder_hidden != model.decoder_hidden:
        errors.append(f"model.attention: dot attention needs decoder_hidden "
                      f"({model.decoder_hidden}) = 2 x encoder_hidden "
                      f"({2 * model.encoder_hidden}); use general or bahdanau, or change the sizes")
    if config.train.lr_schedule == "linear" and not (
            config.train.max_steps or config.train.max_epochs or config.train.max_minutes):
        errors.append("train.lr_schedule: linear falls to min_lr at the end of the run's budget, "
                      "but the run has none; set train.max_steps, train.max_epochs or "
                      "train.max_minutes")
    if config.train.average_last > config.train.keep_last:
        errors.append(f"train.average_last: {config.train.average_last} checkpoints to average, "
                      f"but train.keep_last keeps only {config.train.keep_last}; raise keep_last")
    if config.train.min_lr > config.train.lr:
        errors.append(f"train.min_lr: {config.train.min_lr} is above train.lr ({config.train.lr})")
    return errors


def _tag_errors(data: DataConfig) -> list[str]:
    errors = []
    for index, corpus in enumerate(data.train):
        where = f"{data.corpus_key(index)}.tag"
        if not corpus.tag:
            continue
        if corpus.tag.split() != [corpus.tag]:
            errors.append(f"{where}: {corpus.tag!r} has spaces; a tag is one piece, such as <bt>")
        elif corpus.tag in SPECIAL_PIECES:
            errors.append(f"{where}: {corpus.tag!r} is one of sentencepiece's special pieces "
                          f"({', '.join(SPECIAL_PIECES)}); choose another, such as <bt>")
    return errors


def _suggestion(word: str, choices: Any) -> str:
    matches = difflib.get_close_matches(word, [str(choice) for choice in choices], n=1, cutoff=0.6)
    return f" — did you mean {matches[0]}?" if matches else ""


def _describe(value: Any) -> str:
    return f"{_yaml_type_name(value)} {value!r}" if value is not None else "nothing (null)"


def _yaml_type_name(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string",
             list: "list", dict: "mapping", type(None): "null"}
    return names.get(type(value), type(value).__name__)

