"""BM25 tokenization with and without the NFC step, side by side on the bundled sample.

    python benchmarks/tokenize_speed.py [--repeat 5] [--copies 5]

``retrievers.tokenize.tokenize`` checks each text is in Unicode NFC (and composes it when
not) before matching words; "before" is the same tokenizer without that step. Both must
give identical tokens on the sample (already NFC), which the script asserts.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from retrievers.tokenize import STOPWORDS, TOKEN, tokenize  # noqa: E402


def without_nfc(text: str) -> list[str]:
    return [t for t in TOKEN.findall(text.lower()) if t not in STOPWORDS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each (median)")
    parser.add_argument("--copies", type=int, default=5, help="passes over the sample")
    args = parser.parse_args()
    with gzip.open(ROOT / "searchagent" / "sample" / "corpus.jsonl.gz", "rt") as handle:
        rows = [json.loads(line) for line in handle]
    texts = [f"{row['title']} {row['text']}" for row in rows] * args.copies
    assert all(without_nfc(text) == tokenize(text) for text in texts)
    seconds: dict[str, list[float]] = {"before (no NFC step)": [], "now (NFC step)": []}
    for _ in range(args.repeat):             # interleaved, so load hits both alike
        for name, tokenizer in zip(seconds, (without_nfc, tokenize)):
            start = time.perf_counter()
            for text in texts:
                tokenizer(text)
            seconds[name].append(time.perf_counter() - start)
    print(f"| tokenizer | passages | median s ({args.repeat} runs) | passages/s |")
    print("|---|---|---|---|")
    for name, runs in seconds.items():
        median = statistics.median(runs)
        print(f"| {name} | {len(texts)} | {median:.3f} | {len(texts) / median:,.0f} |")


if __name__ == "__main__":
    main()
