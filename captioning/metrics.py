"""Caption metrics with pycocoevalcap: BLEU-1..4, METEOR (needs Java), ROUGE-L, CIDEr."""

from __future__ import annotations

import shutil
import warnings
from collections import Counter


def bleu4(references: dict, hypotheses: dict) -> float:
    """Corpus BLEU-4 of already tokenised, space-joined captions ({id: [refs]}, {id: [hyp]})."""
    from pycocoevalcap.bleu.bleu import Bleu

    scores, _ = Bleu(4).compute_score(references, hypotheses, verbose=0)
    return float(scores[3])


def ngram_matches(references: dict, hypotheses: dict, n: int = 4) -> int:
    """How many of the hypotheses' n-grams match a reference n-gram (clipped per image, as BLEU counts them): 0 for
    n = 4 makes BLEU-4 a rounding residue (about 1e-8) rather than a score."""
    total = 0
    for key, (hypothesis, *_) in hypotheses.items():
        grams = Counter(ngrams(hypothesis.split(), n))
        most = Counter()
        for reference in references[key]:
            most |= Counter(ngrams(reference.split(), n))
        total += sum((grams & most).values())
    return total


def ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


FUNCTION_WORDS = ("a", "and", "of", "the", "with", "in")  # a caption ending in one of these was cut off


def broken_ending_share(captions: list[str]) -> float:
    """Share of captions whose last word is a function word ("a man in a red shirt and a"): the disfluency
    self-critical training is known to cause."""
    endings = [c.split()[-1] if c.split() else "" for c in captions]
    return sum(word in FUNCTION_WORDS for word in endings) / max(len(captions), 1)


def cider(references: dict, hypotheses: dict) -> float:
    """Corpus CIDEr-D (pycocoevalcap; document frequencies from these references) of tokenised captions."""
    from pycocoevalcap.cider.cider import Cider

    score, _ = Cider().compute_score(references, hypotheses)
    return float(score)


def coco_metrics(references: dict, hypotheses: dict, meteor: bool = True) -> dict[str, float]:
    """All metrics after the PTB tokenizer (Java); without Java the text is used as already tokenised."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    has_java = shutil.which("java") is not None
    if has_java:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        tokenizer = PTBTokenizer()
        references = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in references.items()})
        hypotheses = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in hypotheses.items()})
    else:
        warnings.warn("Java not found: PTB tokenizer and METEOR skipped", stacklevel=2)
    results = {}
    bleu, _ = Bleu(4).compute_score(references, hypotheses, verbose=0)
    results.update({f"BLEU-{i + 1}": float(b) for i, b in enumerate(bleu)})
    if meteor and has_java:
        from pycocoevalcap.meteor.meteor import Meteor

        scorer = Meteor()
        results["METEOR"] = float(scorer.compute_score(references, hypotheses)[0])
        scorer.close() if hasattr(scorer, "close") else None
    results["ROUGE-L"] = float(Rouge().compute_score(references, hypotheses)[0])
    results["CIDEr"] = float(Cider().compute_score(references, hypotheses)[0])
    return results
