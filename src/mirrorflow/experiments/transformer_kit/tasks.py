"""Data and losses of the transformer experiments: three real tasks that run offline.

* :class:`SpeakerTask` — *which of the K most frequent speakers of tiny_shakespeare says this line?*
  (text classification; the offline task for the pretrained MiniLM). The corpus is split into speeches
  (blocks separated by a blank line, first line ``NAME:``); the K speakers with the most lines are kept
  and every line of their speeches is one example labelled by the speaker. Speeches (not lines) are split
  into train / validation with a fixed seed (``split_seed``), so no speech has lines on both sides.
  With K = 4 the speakers are GLOUCESTER, DUKE VINCENTIO, KING RICHARD II and LEONTES (902, 822, 758
  and 679 lines; majority-class accuracy ≈ 0.29).
* :class:`LMTask` — causal language modelling on tiny_shakespeare (the paper's LoRA task, App. F):
  the first 90 % of the text trains, the last 10 % validates (nanoGPT's split). Characters are the
  tokens for the small GPT-2 built from a config; a pretrained model's own tokenizer otherwise.
* :class:`DigitsTask` — scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes), a
  stratified train/validation split with a fixed seed (``val_fraction`` 0.3 by default: 1,257 / 540 images,
  so the binomial standard error of a validation accuracy near 95 % is ≈ 0.9 points); images are scaled to [-1, 1]
  and, for a pretrained ViT,
  resized to its ``image_size`` and repeated over its channels.

Every task gives ``n_train``, ``train_batch(indices)``, ``loss(model, batch)``, ``eval_batches()`` and
``eval_stats(model, batch) -> (loss_sum, correct, count)``. Batches are drawn by :class:`EpochSampler`, a
pure function of (seed, step): a run restarted from a snapshot at step t sees the same batches.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError, DataError


class EpochSampler:
    """Indices of the batch at step t: epoch e = t // (n // B) uses ``randperm(n)`` seeded by (seed, e).

    The last incomplete batch of an epoch is dropped. Stateless apart from a one-epoch cache.
    """

    def __init__(self, n: int, batch_size: int, seed: int):
        if batch_size < 1:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")
        if batch_size > n:
            raise ConfigError(f"batch_size={batch_size} is larger than the training set ({n} examples)")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.steps_per_epoch = n // batch_size
        self._cache: tuple[int, torch.Tensor] | None = None

    def indices(self, step: int) -> torch.Tensor:
        epoch, i = divmod(int(step), self.steps_per_epoch)
        if self._cache is None or self._cache[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._cache = (epoch, torch.randperm(self.n, generator=g))
        return self._cache[1][i * self.batch_size : (i + 1) * self.batch_size]


def _chunks(n: int, size: int):
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


# ------------------------------------------------------------------------------------------------ text
@dataclass
class SpeakerData:
    lines: list[str]
    labels: list[int]
    speech: list[int]  # index of the speech each line belongs to
    names: list[str]  # label -> speaker


def speaker_lines(text: str, k: int) -> SpeakerData:
    """Every line spoken by the ``k`` speakers with the most lines (ties: alphabetical), with its speech id."""
    if k < 2:
        raise ConfigError(f"speakers must be at least 2, got {k}")
    speeches: list[tuple[str, list[str]]] = []
    for block in text.split("\n\n"):
        rows = [r for r in block.strip("\n").split("\n") if r.strip()]
        if len(rows) >= 2 and rows[0].endswith(":"):
            speeches.append((rows[0][:-1].strip(), [r.strip() for r in rows[1:]]))
    counts: Counter[str] = Counter()
    for who, rows in speeches:
        counts[who] += len(rows)
    if len(counts) < k:
        raise DataError(f"tiny_shakespeare has only {len(counts)} speakers, fewer than speakers={k}")
    names = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]
    label = {w: i for i, w in enumerate(names)}
    lines, labels, speech = [], [], []
    for sid, (who, rows) in enumerate(speeches):
        if who in label:
            for r in rows:
                lines.append(r)
                labels.append(label[who])
                speech.append(sid)
    return SpeakerData(lines, labels, speech, names)


class TextClassifier(nn.Module):
    """Encoder (BERT-like) → mean over non-padding tokens → linear head (sentence-transformers pooling)."""

    def __init__(self, encoder: nn.Module, n_classes: int, hidden: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return self.head((h * m).sum(1) / m.sum(1).clamp_min(1.0))


class _Classification:
    has_accuracy = True

    def logits(self, model: nn.Module, batch: dict) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        return F.cross_entropy(self.logits(model, batch).float(), batch["labels"])

    @torch.no_grad()
    def eval_stats(self, model: nn.Module, batch: dict) -> tuple[float, float, float]:
        z = self.logits(model, batch).float()
        y = batch["labels"]
        per = F.cross_entropy(z, y, reduction="none")
        n = float(y.numel())
        return float(per.sum()), float((z.argmax(-1) == y).sum()), n, float(per.sum()), float((per**2).sum()), n


class SpeakerTask(_Classification):
    """Classify a line of tiny_shakespeare by its speaker (module docstring)."""

    name = "speakers"

    def __init__(
        self,
        text: str,
        tokenizer,
        k: int = 4,
        max_length: int = 24,
        val_size: int = 256,
        split_seed: int = 0,
        val_fraction: float = 0.2,
        device: str = "cpu",
        eval_batch: int = 128,
    ):
        if max_length < 4:
            raise ConfigError(f"max_length must be at least 4, got {max_length}")
        data = speaker_lines(text, k)
        self.names = data.names
        self.n_classes = k
        speech_ids = sorted(set(data.speech))
        g = torch.Generator().manual_seed(split_seed)
        perm = torch.randperm(len(speech_ids), generator=g).tolist()
        n_val = max(1, int(round(val_fraction * len(speech_ids))))
        val_speeches = {speech_ids[i] for i in perm[:n_val]}
        tr = [i for i, s in enumerate(data.speech) if s not in val_speeches]
        va = [i for i, s in enumerate(data.speech) if s in val_speeches]
        order = torch.randperm(len(va), generator=g).tolist()
        va = [va[i] for i in order[: val_size if val_size > 0 else len(va)]]
        enc = tokenizer(data.lines, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
        ids, mask = enc["input_ids"], enc["attention_mask"]
        y = torch.tensor(data.labels)
        self.train_ids, self.train_mask, self.train_y = ids[tr], mask[tr], y[tr]
        self.val_ids, self.val_mask, self.val_y = ids[va], mask[va], y[va]
        self.n_train = len(tr)
        self.n_val = len(va)
        self.device = device
        self.eval_batch = eval_batch

    def _batch(self, ids, mask, y) -> dict:
        width = int(mask.sum(1).max())  # trim padding to the longest line of the batch
        return {
            "input_ids": ids[:, :width].to(self.device),
            "attention_mask": mask[:, :width].to(self.device),
            "labels": y.to(self.device),
        }

    def train_batch(self, idx: torch.Tensor) -> dict:
        return self._batch(self.train_ids[idx], self.train_mask[idx], self.train_y[idx])

    def eval_batches(self) -> list[dict]:
        return [
            self._batch(self.val_ids[s], self.val_mask[s], self.val_y[s]) for s in _chunks(self.n_val, self.eval_batch)
        ]

    def logits(self, model: nn.Module, batch: dict) -> torch.Tensor:
        return model(batch["input_ids"], batch["attention_mask"])

    def describe(self) -> str:
        return (
            f"speaker of a line, K={self.n_classes} ({', '.join(self.names)}); "
            f"{self.n_train} train / {self.n_val} validation lines"
        )


class CharTokenizer:
    """Characters as tokens (the vocabulary of the small GPT-2 built from a config)."""

    def __init__(self, text: str):
        self.chars = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        return [self.index[c] for c in text]


class LMTask:
    """Next-token prediction on tiny_shakespeare windows of ``block_size`` tokens (module docstring)."""

    name = "lm"
    has_accuracy = False

    def __init__(
        self,
        text: str,
        tokenizer=None,
        block_size: int = 64,
        val_windows: int = 64,
        device: str = "cpu",
        eval_batch: int = 32,
        val_subset: int = 0,
    ):
        if block_size < 2:
            raise ConfigError(f"block_size must be at least 2, got {block_size}")
        if tokenizer is None:
            tokenizer = CharTokenizer(text)
            ids = tokenizer.encode(text)
        else:
            ids = _encode_long(tokenizer, text)
        self.tokenizer = tokenizer
        data = torch.tensor(ids, dtype=torch.long)
        cut = int(0.9 * len(data))
        self.train_data, self.val_data = data[:cut], data[cut:]
        self.block_size = block_size
        self.n_train = len(self.train_data) - block_size - 1
        n_possible = (len(self.val_data) - 1) // (block_size + 1)
        if n_possible < 1 or self.n_train < 1:
            raise ConfigError(f"block_size={block_size} is too long for tiny_shakespeare's split")
        n = min(val_windows if val_windows > 0 else n_possible, n_possible)
        stride = (len(self.val_data) - block_size - 1) // max(n, 1)
        starts = [i * stride for i in range(n)]
        self.subset_batches = None
        if 0 < val_subset < n:  # every (n / val_subset)-th window first: the subset evaluated at every row
            pick = sorted({int(i * n / val_subset) for i in range(val_subset)})
            rest = sorted(set(range(n)) - set(pick))
            starts = [starts[i] for i in pick] + [starts[i] for i in rest]
            self.n_subset = len(pick)
            self.subset_batches = -(-len(pick) // eval_batch)
        self.val_starts = starts
        self.n_val = n
        self.device = device
        self.eval_batch = eval_batch

    def _windows(self, src: torch.Tensor, starts) -> dict:
        off = torch.arange(self.block_size + 1)
        x = src[torch.as_tensor(starts).view(-1, 1) + off]
        return {"tokens": x.to(self.device)}

    def train_batch(self, idx: torch.Tensor) -> dict:
        return self._windows(self.train_data, idx)

    def eval_batches(self) -> list[dict]:
        """Batches of validation windows; with a subset, its windows fill the first ``subset_batches``."""
        if self.subset_batches is None:
            cuts = list(_chunks(self.n_val, self.eval_batch))
        else:
            k = self.n_subset
            cuts = list(_chunks(k, self.eval_batch)) + [
                slice(s.start + k, s.stop + k) for s in _chunks(self.n_val - k, self.eval_batch)
            ]
        return [self._windows(self.val_data, self.val_starts[s]) for s in cuts]

    def _logits_targets(self, model: nn.Module, batch: dict):
        x = batch["tokens"]
        logits = model(input_ids=x[:, :-1]).logits.float()
        return logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1)

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        return F.cross_entropy(*self._logits_targets(model, batch))

    @torch.no_grad()
    def eval_stats(self, model: nn.Module, batch: dict) -> tuple[float, float, float]:
        """Token sums (loss, correct, count) and the per-window mean losses' sum, sum of squares and count."""
        z, y = self._logits_targets(model, batch)
        per = F.cross_entropy(z, y, reduction="none").view(batch["tokens"].shape[0], -1)
        w = per.mean(1)
        return (
            float(per.sum()),
            float((z.argmax(-1) == y).sum()),
            float(y.numel()),
            float(w.sum()),
            float((w**2).sum()),
            float(w.numel()),
        )

    def describe(self) -> str:
        sub = f"; {self.n_subset} of them at every evaluation during training" if self.subset_batches else ""
        return (
            f"causal LM on tiny_shakespeare, block {self.block_size} tokens; {len(self.train_data)} train / "
            f"{len(self.val_data)} validation tokens ({self.n_val} validation windows{sub})"
        )


def _encode_long(tokenizer, text: str) -> list[int]:
    """Token ids of the whole corpus, encoded in chunks of lines (no model-length warnings)."""
    out: list[int] = []
    lines = text.splitlines(keepends=True)
    for s in _chunks(len(lines), 2000):
        out.extend(tokenizer("".join(lines[s]), add_special_tokens=False)["input_ids"])
    return out


# ---------------------------------------------------------------------------------------------- images
DIGITS_N = 1797  # images in scikit-learn's digits
DIGITS_VAL_FRACTION = 0.3


def digits_train_size(val_fraction: float = DIGITS_VAL_FRACTION) -> int:
    """Training images of the split (scikit-learn rounds the validation share up)."""
    import math

    return DIGITS_N - math.ceil(val_fraction * DIGITS_N)


class DigitsTask(_Classification):
    """scikit-learn's bundled 8×8 digits (module docstring); ``image_size``/``channels`` follow the model."""

    name = "digits"

    def __init__(
        self,
        image_size: int = 8,
        channels: int = 1,
        split_seed: int = 0,
        device: str = "cpu",
        eval_batch: int = 256,
        val_fraction: float = DIGITS_VAL_FRACTION,
    ):
        if not 0 < val_fraction < 1:
            raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        d = load_digits()
        x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0 * 2.0 - 1.0  # [-1, 1]
        y = torch.tensor(d.target, dtype=torch.long)
        tr, va = train_test_split(
            list(range(len(y))), test_size=val_fraction, random_state=split_seed, stratify=d.target
        )
        self.train_x, self.train_y = x[tr], y[tr]
        self.val_x, self.val_y = x[va], y[va]
        self.n_train, self.n_val = len(tr), len(va)
        self.n_classes = 10
        self.image_size, self.channels = int(image_size), int(channels)
        self.device = device
        self.eval_batch = eval_batch

    def _batch(self, x: torch.Tensor, y: torch.Tensor) -> dict:
        if self.image_size != x.shape[-1]:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        if self.channels != 1:
            x = x.expand(-1, self.channels, -1, -1)
        return {"pixel_values": x.contiguous().to(self.device), "labels": y.to(self.device)}

    def train_batch(self, idx: torch.Tensor) -> dict:
        return self._batch(self.train_x[idx], self.train_y[idx])

    def eval_batches(self) -> list[dict]:
        return [self._batch(self.val_x[s], self.val_y[s]) for s in _chunks(self.n_val, self.eval_batch)]

    def logits(self, model: nn.Module, batch: dict) -> torch.Tensor:
        return model(pixel_values=batch["pixel_values"]).logits

    def describe(self) -> str:
        return (
            f"scikit-learn digits (8×8, 10 classes) at {self.image_size}×{self.image_size}; "
            f"{self.n_train} train / {self.n_val} validation images"
        )
