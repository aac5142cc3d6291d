"""CIDEr-D with fixed document frequencies gives pycocoevalcap's per-image scores."""

import json
from pathlib import Path

import numpy as np
import pytest
from pycocoevalcap.cider.cider import Cider

from captioning.cider import CiderD, document_frequencies, ngram_counts

REFERENCES = {
    0: ["a dog runs on the grass", "a brown dog is running through a field", "the dog plays outside"],
    1: ["a man rides a bike down the street", "a person on a bicycle", "a cyclist rides on a road"],
    2: ["two children play in the water", "kids splash at the beach", "two kids are swimming"],
    3: ["a woman in a red shirt is climbing a rock", "a climber on a cliff", "a woman climbs a rock wall"],
}
CANDIDATES = {
    0: "a dog is running on the grass",
    1: "a man rides a bicycle on the street",
    2: "two kids play in the water at the beach",
    3: "a man in a red shirt and a",
}


def test_ngram_counts_cover_orders_one_to_four():
    counts = ngram_counts("a dog a dog")
    assert counts[("a",)] == 2 and counts[("a", "dog")] == 2 and counts[("a", "dog", "a", "dog")] == 1
    assert max(len(g) for g in counts) == 4


def test_document_frequency_counts_images_not_captions():
    frequency, log_images = document_frequencies([["a dog", "a dog runs"], ["a cat"]])
    assert frequency[("a",)] == 2.0 and frequency[("dog",)] == 1.0 and frequency[("cat",)] == 1.0
    assert log_images == pytest.approx(np.log(2.0))


def test_matches_pycocoevalcap_on_fixed_captions():
    _, expected = Cider().compute_score(REFERENCES, {k: [v] for k, v in CANDIDATES.items()})
    scorer = CiderD(REFERENCES.values())
    found = [scorer.score(CANDIDATES[k], REFERENCES[k], key=k) for k in REFERENCES]
    np.testing.assert_allclose(found, expected, rtol=0, atol=1e-6)
    assert found[0] > found[3] > 0  # a close caption beats a broken one


def test_matches_pycocoevalcap_on_real_flickr8k_references():
    split = Path(__file__).resolve().parents[2] / "shared" / "flickr8k" / "dataset_flickr8k.json"
    if not split.exists():
        pytest.skip("shared Flickr8k not present")
    images = [im for im in json.loads(split.read_text())["images"] if im["split"] == "val"][:200]
    refs = {i: [" ".join(s["tokens"]) for s in im["sentences"]] for i, im in enumerate(images)}
    candidates = {i: [refs[(i + 1) % len(refs)][0] if i % 3 else refs[i][0]] for i in refs}  # mixed quality
    _, expected = Cider().compute_score(refs, candidates)
    scorer = CiderD(refs.values())
    found = [scorer.score(candidates[i][0], refs[i], key=i) for i in refs]
    np.testing.assert_allclose(found, expected, rtol=0, atol=1e-6)


def test_reference_cache_gives_same_score():
    scorer = CiderD(REFERENCES.values())
    first = scorer.score(CANDIDATES[1], REFERENCES[1], key=1)
    assert scorer.score(CANDIDATES[1], REFERENCES[1], key=1) == first == scorer.score(CANDIDATES[1], REFERENCES[1])
