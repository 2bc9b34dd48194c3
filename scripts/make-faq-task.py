#!/usr/bin/env python3
"""Writes a multiple-choice task (JSON lines) from the Python FAQ text, one of two kinds:

* answers (the default): each FAQ question becomes one item, the context "Question: <question>\nAnswer:" and
  four choices, the first sentence of the question's own answer and the first sentences of three other answers;
  it asks for knowledge, and small models stay near chance;
* `--completions`: 300 sentences of the FAQ's prose (10 to 40 words) become items, the context the first half
  of a sentence's words and four choices, its own second half and the second halves of three other sentences;
  it asks for fluent, coherent text, which even the 5.5M-parameter demo model shows.

Choices are drawn with a fixed seed and shuffled; `gold` is the index of the real one. Inline reStructuredText
markup is reduced to its text. Deterministic: the same input gives the same bytes.

    scripts/make-faq-task.py ../shared/data/eval-python-faq.txt > web/data/tasks-python-faq.jsonl
    scripts/make-faq-task.py --completions ../shared/data/eval-python-faq.txt > web/data/tasks-python-faq-completions.jsonl
"""
import argparse
import json
import random
import re

CHOICES = 4
SEED = 42
COMPLETIONS = 300


def plain(text):
    """Inline reStructuredText to plain text: roles, literals, links, emphasis."""
    text = re.sub(r":[a-z:]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`", r"\1", text)
    text = re.sub(r"`([^`<]*?)\s*<[^>]*>`_{1,2}", r"\1", text)
    text = re.sub(r"``([^`]*)``", r"\1", text)
    text = re.sub(r"`([^`]*)`_{0,2}", r"\1", text)
    text = re.sub(r"\*\*?([^*]+)\*\*?", r"\1", text)
    return re.sub(r"\s+", " ", text).strip()


def is_rule(line):
    """A heading's underline."""
    return re.fullmatch(r"[-=~^*]{3,}", line) is not None


def prose_paragraphs(lines):
    """The prose paragraphs of `lines` as plain text: no code, directives, quotes or headings."""
    paras, para = [], []
    for line in lines + [""]:
        if not line.strip() or is_rule(line):
            if para and not is_rule(line):
                paras.append(plain(" ".join(para)))
            para = []  # a paragraph followed by an underline was a heading
        elif para or not line.startswith((" ", "\t", "..", ">>>")):
            para.append(line.strip())
    return paras


def first_sentence(lines):
    """The first sentence of the first prose paragraph in `lines`, or None."""
    paras = prose_paragraphs(lines)
    if not paras:
        return None
    m = re.match(r"(.+?[.!?])(?:\s|$)", paras[0])
    if not m:
        return None
    sentence = m.group(1)
    if not 30 <= len(sentence) <= 240 or sentence.endswith("::") or sentence.endswith(":"):
        return None
    return sentence


def answers(lines, rng):
    """Items of the answers kind: a question, its answer's first sentence among three others."""
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
    for q, a in pairs:
        others = rng.sample([o for _, o in pairs if o != a], CHOICES - 1)
        yield f"Question: {q}\nAnswer:", [" " + c for c in [a] + others]


def completions(lines, rng):
    """Items of the completions kind: half a sentence, its own second half among three others."""
    sentences = []
    for para in prose_paragraphs(lines):
        for s in re.findall(r"[A-Z][^.!?]*[.!?](?=\s|$)", para):
            if 10 <= len(s.split()) <= 40 and "::" not in s and s not in sentences:
                sentences.append(s)

    def halves(s):
        words = s.split()
        return " ".join(words[: len(words) // 2]), " " + " ".join(words[len(words) // 2 :])

    for s in rng.sample(sentences, COMPLETIONS):
        context, real = halves(s)
        others = []
        while len(others) < CHOICES - 1:
            other = halves(rng.choice(sentences))[1]
            if other != real and other not in others:
                others.append(other)
        yield context, [real] + others


def main():
    args = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    args.add_argument("faq", help="the FAQ text (reStructuredText sources)")
    args.add_argument("--completions", action="store_true", help="sentence completions instead of answers")
    args = args.parse_args()
    lines = open(args.faq, encoding="utf-8").read().split("\n")
    rng = random.Random(SEED)
    for context, (real, *others) in (completions if args.completions else answers)(lines, rng):
        gold = rng.randrange(CHOICES)
        item = {"context": context, "choices": others[:gold] + [real] + others[gold:], "gold": gold}
        print(json.dumps(item, ensure_ascii=False))


if __name__ == "__main__":
    main()
