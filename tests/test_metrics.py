"""Small caption statistics reported beside the COCO metrics."""

from captioning.metrics import broken_ending_share, ngram_matches


def test_broken_ending_share_counts_captions_cut_after_a_function_word():
    captions = ["a man in a red shirt and a", "a dog runs on the grass", "two kids play in", "a cat with"]
    assert broken_ending_share(captions) == 0.75
    assert broken_ending_share(["a dog", "the end"]) == 0.0  # "a"/"the" inside a caption do not count
    assert broken_ending_share([]) == 0.0


def test_ngram_matches_are_clipped_per_image():
    references = {0: ["a dog runs on the grass", "a dog runs fast"], 1: ["two men talk"]}
    hypotheses = {0: ["a dog runs on the grass a dog runs on"], 1: ["two men talk loudly"]}
    # image 0: "a dog runs on" (twice, clipped to once), "dog runs on the", "runs on the grass"; image 1: none
    assert ngram_matches(references, hypotheses) == 3
    assert ngram_matches(references, {0: ["the grass is green"], 1: ["men talk"]}) == 0
