"""The attention check: hiding a word's attended cells vs cells elsewhere, and the input-times-gradient map. On a
small model trained here on synthetic shapes whose start state cannot see the photo (so "red" can only come through
attention, from the red shape), hiding the attended cells lowers p("red") more than hiding elsewhere; the
before-probabilities are the probe's; a check is deterministic; the gradient map is right on hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TorchThreads

from captioning.attention_check import (
    MAX_CHECK_WORDS,
    attended_cells,
    cells_elsewhere,
    check_attention,
    drops,
    hidden_images,
    hidden_picture,
    hide_mask,
    input_times_gradient,
    neighbours,
    positive_share,
    word_gradients,
)
from captioning.config import DecoderConfig, EncoderSpec
from captioning.model import Captioner, create_captioner
from captioning.preprocess import preprocess_image
from captioning.probe import image_features, probe
from captioning.synthetic import COLORS, SHAPES, draw_shapes, make_synthetic, noisy_background

GRID = 14


# --- pure pieces --------------------------------------------------------------------------------------------------


def test_attended_cells_are_the_fewest_holding_half_the_attention():
    alpha = np.zeros(196)
    alpha[[5, 9, 40]] = [0.3, 0.25, 0.45]
    assert attended_cells(alpha) == [40, 5]  # 0.45 + 0.3 >= 0.5; 40 alone is not
    assert attended_cells(np.eye(196)[7]) == [7]  # one-hot (hard attention): the cell read
    assert attended_cells(np.full(196, 1 / 196)) == list(range(98))  # flat: half the grid, at least one cell
    assert len(attended_cells(alpha, share=0.01)) == 1


def test_cells_elsewhere_are_as_many_away_from_the_attended_ones_and_seeded():
    attended = [0, 1, 14, 15]
    draws = cells_elsewhere(attended, GRID, 4, np.random.default_rng(3))
    near = neighbours(attended, GRID)
    assert len(draws) == 4 and all(len(cells) == 4 for cells in draws)
    assert all(not near & set(cells) for cells in draws)
    assert draws == cells_elsewhere(attended, GRID, 4, np.random.default_rng(3))
    almost_all = list(range(190))  # too few far cells left: any cell not attended
    assert all(
        set(cells) <= set(range(190, 196)) for cells in cells_elsewhere(almost_all, GRID, 2, np.random.default_rng(0))
    )


def test_the_mask_covers_its_cells_feathered_and_fills_with_the_preprocessing_mean():
    mask = hide_mask([GRID + 1], GRID, 448, 448)  # row 1, column 1: pixels 32..63
    assert mask.shape == (448, 448)
    assert mask[48, 48] == 1.0 and mask[48, 100] == 0.0 and mask[100, 48] == 0.0
    assert 0.0 < float(mask[48, 32]) < 1.0 and 0.0 < float(mask[31, 48]) < 1.0  # feathered edges
    wide = hide_mask([0], GRID, 140, 280)  # a picture of any shape: cell 0 is its top-left 10 x 20 pixels
    assert wide[5, 10] == 1.0 and wide[5, 40] == 0.0
    images = torch.randn(1, 3, 448, 448)
    hidden = hidden_images(images, [[GRID + 1], []], GRID)  # (2, 3, 448, 448)
    assert torch.equal(hidden[1], images[0])  # no cell: the photo as it is
    assert torch.all(hidden[0, :, 40:56, 40:56] == 0.0)  # the mean, normalised, is 0
    assert torch.equal(hidden[0, :, 100:, 100:], images[0, :, 100:, 100:])
    picture = np.full((448, 448, 3), 200, dtype=np.uint8)
    shown = hidden_picture(picture, [GRID + 1], GRID, (0.5, 0.25, 0.5))
    assert shown[48, 48].tolist() == [128, 64, 128] and shown[200, 200].tolist() == [200, 200, 200]


def test_input_times_gradient_on_a_linear_score():
    """score_r = sum w * x over row r: the map is w * x summed over channels, its sum the score itself, and its sign
    follows the cells that raise (w * x > 0) or lower the score."""
    torch.manual_seed(0)
    features = torch.randn(2, 6, 3)  # (R, cells, C)
    weights = torch.randn(6, 3)  # (cells, C)
    maps = input_times_gradient(features, lambda rows: (rows * weights).sum(dim=(1, 2)))  # (2, 6)
    expected = (features * weights).sum(dim=2)  # (2, 6)
    assert torch.allclose(maps, expected, atol=1e-6)
    assert torch.allclose(maps.sum(dim=1), (features * weights).sum(dim=(1, 2)), atol=1e-5)
    signs = torch.tensor([[1.0, -1.0, 0.0, 0.0, 0.0, 0.0]])  # cell 0 raises, cell 1 lowers, the rest are zero
    one = input_times_gradient(torch.ones(1, 6, 3), lambda rows: (rows * signs[..., None]).sum(dim=(1, 2)))
    assert one.tolist() == [[3.0, -3.0, 0.0, 0.0, 0.0, 0.0]]
    assert positive_share(one[0].numpy(), [0]) == 1.0 and positive_share(one[0].numpy(), [1, 2]) == 0.0
    assert np.isnan(positive_share(np.zeros(6), [0]))


def test_word_gradients_equal_one_backward_pass_per_word(tiny_model_dir):
    """The batched map (row t of n copies scores word t) is each word's own gradient, taken alone."""
    captioner = Captioner.load(tiny_model_dir)
    features = torch.randn(1, 196, captioner.config.encoder_dim, generator=torch.Generator().manual_seed(1))
    ids = [captioner.word_map[w] for w in ("a", "dog", "sits", "on", "the", "mat")]
    maps = word_gradients(captioner, features, ids)  # (6, 196)
    decoder = captioner.decoder
    captions = torch.tensor([[captioner.word_map["<start>"], *ids, captioner.word_map["<end>"]]])  # (1, 8)
    for t, word in enumerate(ids):
        leaf = features.clone().requires_grad_()
        logits = decoder(leaf, captions, torch.tensor([len(ids) + 2])).logits  # (1, 7, V)
        (grad,) = torch.autograd.grad(torch.log_softmax(logits[0, t], dim=0)[word], leaf)
        assert torch.allclose(maps[t], (features * grad).sum(dim=2)[0], atol=1e-5, rtol=1e-4)


# --- on a tiny model: probe's numbers, determinism, bad input -----------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    with TorchThreads(2):
        yield Captioner.load(tiny_model_dir)


def test_before_probabilities_are_the_probes_and_a_check_repeats_exactly(tiny, tmp_path):
    photo = make_synthetic(1, image_size=96, seed=2)[0].image
    checked = check_attention(tiny, photo, "a red cup")
    probed = probe(tiny, photo, "a red cup")[0]
    assert checked.words == probed.words == ["a", "red", "cup"]
    assert np.array_equal(checked.probs, probed.probs)
    assert np.array_equal(checked.alphas, probed.alphas)
    again = check_attention(tiny, photo, "a red cup", features=image_features(tiny, photo))
    for field in ("probs", "probs_hidden_here", "probs_hidden_elsewhere", "gradient"):
        assert np.array_equal(getattr(checked, field), getattr(again, field)), field
    assert checked.hidden_cells == again.hidden_cells and checked.elsewhere_cells == again.elsewhere_cells
    assert checked.gradient.shape == (3, 14, 14) and len(checked.hidden_cells) == 3
    assert all(0 <= cell < 196 for cells in checked.hidden_cells for cell in cells)


def test_no_text_checks_the_models_own_caption(tiny):
    photo = make_synthetic(1, image_size=96, seed=4)[0].image
    caption = tiny.caption(photo)[0]
    checked = check_attention(tiny, photo, draws=1)
    assert checked.words == caption.words[:MAX_CHECK_WORDS]
    end = probe(tiny, photo, caption.text)[0].end_log_prob if caption.complete else 0.0  # in the score if it ended
    assert np.isclose(np.log(checked.probs).sum() + end, caption.score, atol=1e-4)


@pytest.mark.parametrize(
    "text, message",
    [
        ("?!", "no words to score"),
        (" ".join(["dog"] * 500), f"at most {MAX_CHECK_WORDS} words; this text has 500"),
    ],
)
def test_bad_text_gets_one_line(tiny, text, message):
    photo = make_synthetic(1, image_size=96, seed=2)[0].image
    with pytest.raises(ValueError, match=message) as error:
        check_attention(tiny, photo, text)
    assert "\n" not in str(error.value)


# --- on a model trained on shapes: "red" comes from the red shape ----------------------------------------------------

SHAPE_WORDS = ("<pad>", "a", *COLORS, *SHAPES, "<start>", "<end>", "<unk>")
SHAPES_SIZE = 224  # stored image side, px: 16 px per grid cell
SHAPE_SIDE = 12  # a shape fits inside one cell, clear of the mask's feathered edge


def shape_samples(count: int, seed: int) -> list[tuple]:
    """(image, caption, cell) of images holding one small shape centred in one grid cell: "a red circle"."""
    rng = np.random.default_rng(seed)
    cell_side, margin = SHAPES_SIZE // GRID, (SHAPES_SIZE // GRID - SHAPE_SIDE) // 2
    samples = []
    for _ in range(count):
        color, shape = str(rng.choice(sorted(COLORS))), str(rng.choice(SHAPES))
        cell = int(rng.integers(GRID * GRID))
        x0, y0 = (cell % GRID) * cell_side + margin, (cell // GRID) * cell_side + margin
        box = [x0, y0, x0 + SHAPE_SIDE, y0 + SHAPE_SIDE]
        image = draw_shapes(noisy_background(rng, SHAPES_SIZE), [{"shape": shape, "color": color, "box": box}])
        samples.append((image, f"a {color} {shape}", cell))
    return samples


@pytest.fixture(scope="module")
def shapes_model() -> Captioner:
    """A small decoder trained here on 96 one-shape photos (offline lite0 trunk at 448 px: a native 14x14 map). Its
    start state ignores the photo (init_h / init_c zero and frozen), so colour and shape words can only come
    through attention, which is taught to look at the shape's cell (cross-entropy towards it at those words)."""
    word_map = {w: i for i, w in enumerate(SHAPE_WORDS)}
    spec = EncoderSpec("tf_efficientnet_lite0", "lite-wheel", input_size=448, bf16=False)
    torch.manual_seed(0)
    captioner = create_captioner(spec, word_map, SHAPES_SIZE, DecoderConfig(32, 32, 64, dropout=0.0), max_caption_len=6)
    decoder = captioner.decoder
    for layer in (decoder.init_h, decoder.init_c):
        torch.nn.init.zeros_(layer.weight)
        layer.weight.requires_grad = False
    samples = shape_samples(96, seed=5)
    with TorchThreads(2), torch.no_grad():
        pixels = torch.cat([preprocess_image(image, captioner.config.preprocessing) for image, _, _ in samples])
        features = torch.cat([captioner.encode(chunk) for chunk in pixels.split(16)])  # (96, 196, 1280)
    captions = torch.tensor(
        [[word_map["<start>"], *(word_map[w] for w in text.split()), word_map["<end>"]] for _, text, _ in samples]
    )  # (96, 5)
    cells = torch.tensor([cell for _, _, cell in samples])  # (96,)
    lengths = torch.full((len(samples),), captions.size(1))
    optimizer = torch.optim.Adam([p for p in decoder.parameters() if p.requires_grad], lr=5e-3)
    generator = torch.Generator().manual_seed(0)
    decoder.train()
    with TorchThreads(2):
        for _ in range(150):
            batch = torch.randperm(len(samples), generator=generator)[:32]
            output = decoder(features[batch], captions[batch], lengths[batch])  # logits (32, 4, V), alphas (32, 4, 196)
            words = F.cross_entropy(output.logits.flatten(0, 1), captions[batch, 1:].flatten())
            at_shape = output.alphas[:, 1:3].gather(2, cells[batch, None, None].expand(-1, 2, 1))  # (32, 2, 1)
            optimizer.zero_grad()
            (words - at_shape.clamp_min(1e-9).log().mean()).backward()
            optimizer.step()
    return captioner.eval()


@pytest.mark.slow
def test_hiding_the_red_shape_lowers_p_red_more_than_hiding_elsewhere(shapes_model):
    reds = [(image, text) for image, text, _ in shape_samples(40, seed=99) if text.split()[1] == "red"][:4]
    assert len(reds) >= 3
    here, elsewhere, before = [], [], []
    with TorchThreads(2):
        for image, text in reds:
            checked = check_attention(shapes_model, image, text)
            assert checked.words[1] == "red"
            drop_here, drop_elsewhere = drops(checked)
            here.append(drop_here[1])
            elsewhere.append(drop_elsewhere[1])
            before.append(checked.probs[1])
    assert np.mean(before) > 0.5  # the model learned the colour
    assert np.mean(here) > np.mean(elsewhere) + 0.2, (before, here, elsewhere)
