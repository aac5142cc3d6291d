"""Small caption statistics reported beside the COCO metrics."""

from captioning.metrics import broken_ending_share


def test_broken_ending_share_counts_captions_cut_after_a_function_word():
    captions = ["a man in a red shirt and a", "a dog runs on the grass", "two kids play in", "a cat with"]
    assert broken_ending_share(captions) == 0.75
    assert broken_ending_share(["a dog", "the end"]) == 0.0  # "a"/"the" inside a caption do not count
    assert broken_ending_share([]) == 0.0
