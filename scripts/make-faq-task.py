#!/usr/bin/env python3
"""Writes the multiple-choice task `faq-answers` (JSON lines) from the Python FAQ text.

Each FAQ question becomes one item: the context "Question: <question>\nAnswer:" and four choices, the first
sentence of the question's own answer and the first sentences of three other answers (drawn with a fixed seed),
in a shuffled order; `gold` is the index of the real answer. Inline reStructuredText markup is reduced to its
text. Deterministic: the same input gives the same bytes.

    scripts/make-faq-task.py ../shared/data/eval-python-faq.txt > web/data/tasks-python-faq.jsonl
"""
import json
import random
import re
import sys

CHOICES = 4
SEED = 42


def plain(text):
    """Inline reStructuredText to plain text: roles, literals, links, emphasis."""
    text = re.sub(r":[a-z:]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`", r"\1", text)
    text = re.sub(r"`([^`<]*?)\s*<[^>]*>`_{1,2}", r"\1", text)
    text = re.sub(r"``([^`]*)``", r"\1", text)
    text = re.sub(r"`([^`]*)`_{0,2}", r"\1", text)
    text = re.sub(r"\*\*?([^*]+)\*\*?", r"\1", text)
    return re.sub(r"\s+", " ", text).strip()


def first_sentence(lines):
    """The first sentence of the first prose paragraph in `lines`, or None."""
    para = []
    for line in lines:
        if not line.strip():
            if para:
                break
            continue
        if not para and (line.startswith((" ", "\t", "..", ">>>")) or re.fullmatch(r"[-=~^*]{3,}", line)):
            continue
        para.append(line.strip())
    text = plain(" ".join(para))
    m = re.match(r"(.+?[.!?])(?:\s|$)", text)
    if not m:
        return None
    sentence = m.group(1)
    if not 30 <= len(sentence) <= 240 or sentence.endswith("::") or sentence.endswith(":"):
        return None
    return sentence


def main():
    lines = open(sys.argv[1], encoding="utf-8").read().split("\n")
    heads = [
        i - 1
        for i in range(1, len(lines))
        if re.fullmatch(r"-{3,}", lines[i]) and len(lines[i]) == len(lines[i - 1]) and lines[i - 1].endswith("?")
    ]
    pairs = []
    for k, h in enumerate(heads):
        end = heads[k + 1] if k + 1 < len(heads) else len(lines)
        answer = first_sentence(lines[h + 2 : end])
        if answer and answer not in (a for _, a in pairs):
            pairs.append((plain(lines[h]), answer))
    rng = random.Random(SEED)
    for q, a in pairs:
        others = rng.sample([o for _, o in pairs if o != a], CHOICES - 1)
        gold = rng.randrange(CHOICES)
        choices = others[:gold] + [a] + others[gold:]
        item = {"context": f"Question: {q}\nAnswer:", "choices": [" " + c for c in choices], "gold": gold}
        print(json.dumps(item, ensure_ascii=False))


if __name__ == "__main__":
    main()
