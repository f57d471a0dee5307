"""Standard Hugging Face architectures as workloads, offline: `--hf gpt2` builds the model from
`AutoConfig.for_model("gpt2", ...)`, `--hf-config PATH` from a local config.json (or a model
directory holding one), with random weights and random inputs of the right shape for the task.
Nothing is downloaded; no tokenizer is needed.

HfSpec is plain data (the parent checks it and saves it in the run's ref, see workload_source.py);
`build` imports transformers and belongs in the worker process.

Sizes: `--hf` starts from a small shape that trains in seconds on a CPU (SMALL), `--hf-config` from
the file's own sizes (`size="config"` keeps the architecture's own for `--hf` too); the layer,
hidden, head, vocabulary and sequence-length options override either. Feed-forward widths follow the
hidden size in the architecture's own ratio, and the per-head width follows hidden / heads.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from .errors import BadInputError
from .jsonio import read_json

TASKS = ("causal-lm", "masked-lm", "seq2seq", "classification")
SIZES = ("small", "config")
# --hf's default shape: one to four seconds per trial on a 2-core CPU (a first recommendation for
# `--hf gpt2` within two minutes of `pip install` there, benchmarks/first_recommendation.py), large
# enough that matmuls, not Python, dominate a step (bf16 1.65-1.73x fp32 on an AVX512-BF16 CPU).
SMALL = {"layers": 2, "hidden": 256, "heads": 4, "vocab": 4096, "seq_len": 64}
DEFAULT_SEQ_LEN = 128  # when the config names no sequence length of its own
MASKED_FRACTION = 0.15  # masked LM: the share of positions that carry a label (BERT's)

# Where each size lives in a config, beyond transformers' standard names (attribute_map covers
# num_hidden_layers/hidden_size/num_attention_heads for most architectures).
LAYER_FIELDS = ("num_hidden_layers", "num_decoder_layers", "encoder_layers", "decoder_layers")
FFN_FIELDS = ("intermediate_size", "d_ff", "encoder_ffn_dim", "decoder_ffn_dim", "ffn_dim")
HEAD_FIELDS = ("num_attention_heads", "encoder_attention_heads", "decoder_attention_heads")
POSITION_FIELDS = ("max_position_embeddings", "n_positions", "n_ctx")
TOKEN_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id", "sep_token_id")


@dataclass(frozen=True)
class HfSpec:
    model_type: str | None = None  # --hf ARCH
    config_path: str | None = None  # --hf-config PATH (absolute once checked)
    task: str | None = None  # None: the first the architecture has of seq2seq, masked-lm, causal-lm, classification
    size: str | None = None  # None: small for --hf, config for --hf-config
    layers: int | None = None
    hidden: int | None = None
    heads: int | None = None
    vocab: int | None = None
    seq_len: int | None = None

    # -- plain data (parent side) ---------------------------------------------------------------

    def checked(self) -> HfSpec:
        """Refuse what can be seen without transformers: one of --hf/--hf-config, a config file that
        exists and holds a JSON object, known task and size names, positive sizes."""
        if (self.model_type is None) == (self.config_path is None):
            raise BadInputError("give --hf ARCH or --hf-config PATH (exactly one of them)")
        if self.task is not None and self.task not in TASKS:
            raise BadInputError(f"--hf-task {self.task!r}: expected one of {', '.join(TASKS)}")
        if self.size is not None and self.size not in SIZES:
            raise BadInputError(f"--hf-size {self.size!r}: expected one of {', '.join(SIZES)}")
        for name in ("layers", "hidden", "heads", "vocab", "seq_len"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise BadInputError(f"--hf-{name.replace('_', '-')} {value!r}: expected a whole number >= 1")
        if self.config_path is None:
            return self
        path = config_file(Path(self.config_path))
        return replace(self, config_path=str(path))

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HfSpec:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown Hugging Face option(s) {', '.join(sorted(unknown))}")
        return cls(**data)

    def display_name(self) -> str:
        if self.model_type is not None:
            return self.model_type
        path = Path(str(self.config_path))
        return path.parent.name if path.name == "config.json" else path.stem

    def shown(self) -> str:
        """The options as typed, e.g. `--hf gpt2 --hf-layers 4` (quoted for a shell)."""
        return shlex.join(self.words())

    def words(self) -> list[str]:
        """The options as command-line words: ["--hf", "gpt2", "--hf-layers", "4"]."""
        words = ["--hf", self.model_type] if self.model_type else ["--hf-config", str(self.config_path)]
        for name in ("task", "size", "layers", "hidden", "heads", "vocab", "seq_len"):
            value = getattr(self, name)
            if value is not None:
                words += [f"--hf-{name.replace('_', '-')}", str(value)]
        return words

    @property
    def sizes(self) -> dict[str, int]:
        """The size overrides to apply: SMALL's under --hf unless size=config, then the options."""
        size = self.size or ("small" if self.model_type else "config")
        base = dict(SMALL) if size == "small" else {}
        typed = {k: getattr(self, k) for k in SMALL if getattr(self, k) is not None}
        return {**base, **typed}

    # -- building (worker side: imports transformers) -------------------------------------------

    def build(self) -> HfModel:
        return HfModel.of(self)


TRAINING_BYTES_PER_PARAMETER = 16  # fp32 weight 4 + gradient 4 + AdamW exp_avg 4 + exp_avg_sq 4
CONFIG_EXPECTED = "a Hugging Face config.json, or a model directory holding one"


def read_config(path: Path) -> Any:
    """A --hf-config file's JSON, read as jsonio reads every document: bounded, never run."""
    return read_json(path, f"--hf-config {path}", expected=CONFIG_EXPECTED)


def config_file(path: Path) -> Path:
    """--hf-config: a config.json, or a model directory holding one; read as JSON, never run."""
    if path.is_dir():
        path = path / "config.json"
    data = read_config(path)
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise BadInputError(f"--hf-config {path}: no \"model_type\" in it; expected a Hugging Face config.json "
                            "(save one with config.save_pretrained(DIR))")
    return path.resolve()


def _task_mappings() -> dict[str, Any]:
    from transformers.models.auto import modeling_auto as auto

    return {
        "seq2seq": auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
        "masked-lm": auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        "causal-lm": auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        "classification": auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    }


def supported_model_types() -> list[str]:
    """Every model type transformers can build for one of TASKS (with this transformers)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    mappings = _task_mappings()
    return sorted(t for t in CONFIG_MAPPING_NAMES if any(t in m for m in mappings.values()))


def _unknown(model_type: str, flag: str | None = None) -> BadInputError:
    """An unknown model type, in one short line: the close matches and how many there are (the
    whole list is 3 KB: `python -c "import amp_advisor.hf as h; print(h.supported_model_types())"`)."""
    import difflib

    known = supported_model_types()
    close = difflib.get_close_matches(model_type, known, n=3)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    named = flag or f"--hf {model_type!r}"
    what = f"model_type {model_type!r}" if flag else "not a model type"
    return BadInputError(f"{named}: {what} transformers does not build for a text task here; {hint}{len(known)} "
                         "are supported, e.g. gpt2, bert, llama, t5")


@dataclass
class HfModel:
    """A checked config and its task: what the worker's Workload calls."""

    config: Any
    task: str
    model_class: str
    seq_len: int

    @classmethod
    def of(cls, spec: HfSpec) -> HfModel:
        try:
            import transformers
        except ImportError:
            raise BadInputError("--hf needs the transformers package: pip install 'amp-advisor[hf]'") from None
        transformers.logging.set_verbosity_error()  # random token ids trip its config warnings
        from transformers import AutoConfig

        if spec.config_path is not None:  # any file name: read as JSON (never run), built by its model_type
            data = read_config(Path(spec.config_path))
            model_type = data.pop("model_type")
            from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

            if model_type not in CONFIG_MAPPING_NAMES:
                raise _unknown(model_type, f"--hf-config {spec.config_path}")
            try:
                base = AutoConfig.for_model(model_type, **data)
            except Exception as exc:  # transformers validates a config with errors of its own
                raise BadInputError(f"--hf-config {spec.config_path}: transformers cannot build it ({exc})") from None
        else:
            try:
                base = AutoConfig.for_model(str(spec.model_type))
            except ValueError:
                raise _unknown(str(spec.model_type)) from None
        model_type = base.model_type
        mappings = _task_mappings()
        has = [t for t in TASKS if model_type in mappings[t]]
        if not has:
            raise _unknown(model_type, f"--hf-config {spec.config_path}" if spec.config_path else None)
        preferred = ["seq2seq"] if getattr(base, "is_encoder_decoder", False) else []
        task = spec.task or next(t for t in preferred + ["masked-lm", "causal-lm", "classification"] if t in has)
        if task not in has:
            raise BadInputError(f"--hf-task {task}: transformers has no {model_type} model for it; "
                                f"{model_type} has {', '.join(has)}")
        config, seq_len = _sized(base, spec.sizes)
        return cls(config, task, mappings[task][model_type], seq_len)

    def build_model(self) -> Any:
        import transformers

        return getattr(transformers, self.model_class)(self.config)

    def parameters(self) -> int:
        """The model's parameter count, from a build on the meta device: no memory, no weights."""
        import torch

        with torch.device("meta"):
            model = self.build_model()
        return sum(p.numel() for p in model.parameters())

    def training_bytes(self) -> int:
        """What training needs before any activation: fp32 weights, their gradients and AdamW's
        two moments (TRAINING_BYTES_PER_PARAMETER each parameter)."""
        return self.parameters() * TRAINING_BYTES_PER_PARAMETER

    def make_batch(self, batch_size: int, device: Any) -> dict[str, Any]:
        """Random inputs of the task's shape: token ids avoid the padding id, so that every
        position counts (a classifier reads the last non-padding token)."""
        import torch

        vocab, pad = self.config.vocab_size, getattr(self.config, "pad_token_id", None)
        shape = (batch_size, self.seq_len)
        ids = torch.randint(0, vocab, shape, device=device)
        if pad is not None:
            ids = torch.where(ids == pad, (ids + 1) % vocab, ids)
        if self.task == "causal-lm":
            return {"input_ids": ids, "labels": ids}
        if self.task == "masked-lm":
            labels = torch.where(torch.rand(shape, device=device) < MASKED_FRACTION, ids, torch.full_like(ids, -100))
            labels[:, 0] = ids[:, 0]  # at least one label per row
            return {"input_ids": ids, "labels": labels}
        if self.task == "seq2seq":
            targets = torch.randint(0, vocab, shape, device=device)
            if pad is not None:
                targets = torch.where(targets == pad, (targets + 1) % vocab, targets)
            return {"input_ids": ids, "labels": targets}
        labels = torch.randint(0, self.config.num_labels, (batch_size,), device=device)
        return {"input_ids": ids, "labels": labels}

    def describe(self) -> str:
        c = self.config
        heads = next((getattr(c, f) for f in HEAD_FIELDS if getattr(c, f, None)), None)
        return (f"{self.model_class} ({c.model_type}, {self.task}): {c.num_hidden_layers} layers, hidden "
                f"{c.hidden_size}, {heads} heads, vocabulary {c.vocab_size}, sequence {self.seq_len}")


class _Fields:
    """A config as a dict, with each standard field name mapped to this architecture's own."""

    def __init__(self, base: Any) -> None:
        self.cfg = base.to_dict()
        self.real = {**{k: k for k in self.cfg}, **getattr(base, "attribute_map", {})}

    def name(self, standard: str) -> str:
        return self.real.get(standard, standard)

    def present(self, standard: str) -> str | None:
        key = self.name(standard)
        return key if self.cfg.get(key) is not None else None


def _sized(base: Any, sizes: dict[str, int]) -> tuple[Any, int]:
    """The config with the size overrides applied where this architecture keeps them, and the
    sequence length to train at."""
    fields = _Fields(base)
    changes: dict[str, Any] = {**_depth(fields, sizes), **_width(base, fields, sizes)}
    changes.update(_tokens(base, fields, sizes, changes))
    cfg = fields.cfg
    positions = next(((f, cfg[f]) for f in POSITION_FIELDS if isinstance(cfg.get(f), int)), None)
    seq_len = sizes.get("seq_len") or min(DEFAULT_SEQ_LEN, positions[1] if positions else DEFAULT_SEQ_LEN)
    if positions and seq_len > positions[1]:
        raise BadInputError(f"--hf-seq-len {seq_len}: {base.model_type} has {positions[1]} positions "
                            f"({positions[0]}); give at most {positions[1]}")
    try:
        config = type(base).from_dict({**cfg, **changes})
    except Exception as exc:  # transformers validates a config with errors of its own
        raise BadInputError(f"{base.model_type} with {sizes}: transformers refuses the config ({exc})") from None
    return config, seq_len


def _depth(fields: _Fields, sizes: dict[str, int]) -> dict[str, Any]:
    """The layer count, and the per-layer lists (layer_types...) that follow it."""
    if "layers" not in sizes:
        return {}
    changes: dict[str, Any] = {}
    old_layers = fields.cfg.get(fields.name("num_hidden_layers"))
    for name in LAYER_FIELDS:
        if fields.present(name):
            changes[fields.name(name)] = sizes["layers"]
    for name, value in fields.cfg.items():
        if isinstance(value, list) and value and len(value) == old_layers:
            changes[name] = [value[i % len(value)] for i in range(sizes["layers"])]
    return changes


def _width(base: Any, fields: _Fields, sizes: dict[str, int]) -> dict[str, Any]:
    """The hidden size (feed-forward widths in proportion), the heads and what follows from both."""
    cfg, changes = fields.cfg, {}
    old_hidden = getattr(base, "hidden_size", None)
    hidden = sizes.get("hidden", old_hidden)
    if "hidden" in sizes and old_hidden:
        changes[fields.name("hidden_size")] = hidden
        for name in FFN_FIELDS:
            if fields.present(name):
                changes[name] = max(1, round(cfg[name] * hidden / old_hidden))
    heads = sizes.get("heads") or next((cfg[key] for key in map(fields.present, HEAD_FIELDS) if key), None)
    if "heads" in sizes:
        for name in HEAD_FIELDS:
            if fields.present(name):
                changes[fields.name(name)] = heads
    if ("hidden" in sizes or "heads" in sizes) and heads and hidden:
        if hidden % heads:
            raise BadInputError(f"--hf-hidden {hidden} is not a multiple of --hf-heads {heads}: each head "
                                "gets hidden / heads features")
        for name in ("head_dim", "d_kv"):
            if fields.present(name):
                changes[name] = hidden // heads
        kv = cfg.get("num_key_value_heads")
        if kv and (kv > heads or heads % kv):
            changes["num_key_value_heads"] = heads
    return changes


def _tokens(base: Any, fields: _Fields, sizes: dict[str, int], changes: dict[str, Any]) -> dict[str, Any]:
    """The vocabulary, the special token ids inside it, and the pad and decoder-start ids that
    training needs (given the `changes` made so far)."""
    cfg, out = fields.cfg, {}
    if "vocab" in sizes:
        out[fields.name("vocab_size")] = sizes["vocab"]
    vocab = sizes.get("vocab", getattr(base, "vocab_size", 0))
    for name in TOKEN_FIELDS:  # special token ids must lie inside a smaller vocabulary
        value = cfg.get(name)
        if isinstance(value, int) and value >= vocab:
            out[name] = vocab - 1
    if getattr(base, "is_encoder_decoder", False) and cfg.get("decoder_start_token_id") is None:
        out["decoder_start_token_id"] = cfg.get("pad_token_id") or 0  # shifts the labels right
    if cfg.get("pad_token_id") is None:
        eos = out.get("eos_token_id", changes.get("eos_token_id", cfg.get("eos_token_id")))
        out["pad_token_id"] = eos if isinstance(eos, int) else 0  # a classifier finds the last token by it
    return out

