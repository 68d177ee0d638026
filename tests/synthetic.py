"""Tiny synthetic datasets for unit tests (benchmarks and results use the real files)."""
from __future__ import annotations

import numpy as np

from benchmark.data import SequenceData


def chain_dataset(n_items: int = 40, users: int = 300, min_len: int = 6, max_len_items: int = 14, seed: int = 0, max_len: int = 20) -> SequenceData:
    """Each user's next item is a fixed permutation of the previous one: perfectly learnable."""
    rng = np.random.default_rng(seed)
    nxt = rng.permutation(n_items) + 1  # next item of item i is nxt[i - 1]
    seqs = []
    for _ in range(users):
        s = [int(rng.integers(1, n_items + 1))]
        for _ in range(int(rng.integers(min_len, max_len_items + 1)) - 1):
            s.append(int(nxt[s[-1] - 1]))
        seqs.append(np.array(s, dtype=np.int64))
    return SequenceData(name="chain", format="sequences", path="<synthetic chain>", sha256="0" * 64, sequences=tuple(seqs), n_items=n_items, max_len=max_len)


def write_sequences(path, data: SequenceData):
    """Writes `data` as a "sequences" file (`uid iid_1 ... iid_n` per line) for suites and CLIs."""
    lines = [" ".join(map(str, [u, *seq.tolist()])) for u, seq in enumerate(data.sequences, 1)]
    path.write_text("\n".join(lines) + "\n")
    return path


def skip_chain_dataset(n_items: int = 40, users: int = 300, min_len: int = 6, max_len_items: int = 14, seed: int = 0, max_len: int = 20) -> SequenceData:
    """A second-order chain: the next item is a fixed permutation of the item two back,
    s[t + 1] = P(s[t - 1]), from two independent random first items. The last item says nothing
    about the next one (the two interleaved chains are independent), so a model must read the
    history beyond it, at the right position."""
    rng = np.random.default_rng(seed)
    nxt = rng.permutation(n_items) + 1  # the item after item i two steps later is nxt[i - 1]
    seqs = []
    for _ in range(users):
        s = [int(v) for v in rng.integers(1, n_items + 1, size=2)]
        for _ in range(int(rng.integers(min_len, max_len_items + 1)) - 2):
            s.append(int(nxt[s[-2] - 1]))
        seqs.append(np.array(s, dtype=np.int64))
    return SequenceData(name="skip-chain", format="sequences", path="<synthetic skip chain>", sha256="0" * 64, sequences=tuple(seqs), n_items=n_items, max_len=max_len)


def untimed(curve: list[dict]) -> list[dict]:
    """A training curve without its wall-clock entries, for comparing two runs' curves exactly."""
    return [{k: v for k, v in p.items() if k != "eval_seconds"} for p in curve]
