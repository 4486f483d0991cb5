#!/usr/bin/env python3
"""Writes a pairs file of close paraphrases for `thrifty eval-semantic --online`.

Built only from the training splits in ../shared/eval/train/ (STS-B train and dev), never
from the test sets: every pair of news and forum sentences scored 4 or more (same meaning),
captions left out (their templated sentences make different classes look alike). Sentences
that differ only in case and punctuation are linked into one class, since the benchmark
pairs them with different partners. Deterministic: no randomness, file order kept.

With --min-score S only pairs scored S or more are kept (4.6 leaves the closest ones, with
less of the benchmark's label noise). With --near-misses N it writes instead the first N pairs
of PAWS-Wiki dev labelled different: adversarial near-misses to mix into the stream.

usage: scripts/paraphrase-stream.py [--eval DIR] [--min-score S] [--near-misses N] > stream.jsonl
"""

import argparse
import json
import re
import sys
from pathlib import Path


def normal(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def main() -> None:
    parser = argparse.ArgumentParser()
    here = Path(__file__).resolve().parent.parent
    parser.add_argument("--eval", default=here.parent / "shared" / "eval", type=Path)
    parser.add_argument("--near-misses", type=int, default=0)
    parser.add_argument("--min-score", type=float, default=4.0)
    args = parser.parse_args()
    if args.near_misses:
        lines = (args.eval / "train" / "paws_wiki_dev.jsonl").read_text().splitlines()
        different = [p for p in map(json.loads, lines) if p["label"] == 0]
        for pair in different[: args.near_misses]:
            print(json.dumps({"a": pair["a"], "b": pair["b"], "label": 0}))
        return
    seen: dict[str, str] = {}
    for name in ("stsb_train.jsonl", "stsb_dev.jsonl"):
        for line in (args.eval / "train" / name).read_text().splitlines():
            pair = json.loads(line)
            if pair["score"] < args.min_score or pair["genre"] == "main-captions":
                continue
            print(json.dumps({"a": pair["a"], "b": pair["b"], "label": 1}))
            for text in (pair["a"], pair["b"]):
                first = seen.setdefault(normal(text), text)
                if first != text:
                    print(json.dumps({"a": text, "b": first, "label": 1}))


if __name__ == "__main__":
    sys.exit(main())
