"""Does a word depend on where the model looked? For every word of a caption: hide the cells it attended to in the
photo's pixels, encode the photo again and read the same words again (teacher forcing, as the probe does); do the
same with as many cells hidden elsewhere; and take the input-times-gradient of the word's log-probability over the
196 annotation vectors.

    checked = check_attention(captioner, "photo.jpg")            # the model's own caption
    checked = check_attention(captioner, "photo.jpg", "a dog runs on the grass")
    checked.probs, checked.probs_hidden_here, checked.probs_hidden_elsewhere, checked.gradient_share

A large drop only when the word's own cells are hidden means the word used that region; a drop that is as large
when other cells are hidden, or no drop at all, means the attention map does not explain the word. The demo's JSON
of a check is captioning.payload.check_data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from captioning.model import Captioner, ImageInput
from captioning.probe import evaluating, probe_features, sentence_rows, tokenize_probe
from captioning.search import DEFAULT_BEAM_SIZE
from captioning.text import tokenize
from captioning.vocab import special_ids

ATTENTION_SHARE = 0.5  # the hidden cells hold at least this share of the word's attention
ELSEWHERE_DRAWS = 4  # random sets of cells hidden away from the attended ones, per word
FEATHER = 0.25  # the mask's edges ramp over this fraction of a cell's side
ENCODER_BATCH = 16  # hidden photos per encoder call (bounds the activations' memory at 448 px)
MAX_CHECK_WORDS = 20  # one word costs 1 + ELSEWHERE_DRAWS encoder passes: longer texts are refused


@dataclass(frozen=True)
class AttentionCheck:
    """Per word of one caption on one photo: its probability as is, with its attended cells hidden and with as many
    cells hidden elsewhere, and the input-times-gradient map of its log-probability."""

    words: list[str]
    ids: list[int]
    probs: np.ndarray  # (n,) p(word | photo, words before), exactly as the probe reports it
    probs_hidden_here: np.ndarray  # (n,) the same with the word's attended cells hidden
    probs_hidden_elsewhere: np.ndarray  # (n,) mean over ELSEWHERE_DRAWS draws of as many cells hidden elsewhere
    hidden_cells: list[list[int]]  # per word: the hidden cells (0..195, row-major), most attended first
    elsewhere_cells: list[list[list[int]]]  # per word, per draw: the cells hidden elsewhere
    alphas: np.ndarray  # (n, 14, 14) the attention the cells were chosen from (one-hot for a hard model)
    gradient: np.ndarray  # (n, 14, 14) sum over channels of features * d log p(word) / d features

    @property
    def gradient_share(self) -> np.ndarray:
        """(n,) share of each word's positive gradient mass that lies in its hidden cells."""
        return np.array([positive_share(g.ravel(), c) for g, c in zip(self.gradient, self.hidden_cells)])


def attended_cells(alpha: np.ndarray, share: float = ATTENTION_SHARE) -> list[int]:
    """The smallest set of cells holding at least `share` of a word's attention (alpha (cells,), summing to 1),
    most attended first; at least one cell."""
    order = np.argsort(-alpha, kind="stable")  # (cells,)
    mass = np.cumsum(alpha[order])  # (cells,)
    count = int(np.searchsorted(mass, share * float(mass[-1]) - 1e-9)) + 1
    return [int(c) for c in order[: min(max(count, 1), len(order))]]


def neighbours(cells: list[int], grid: int) -> set[int]:
    """The cells and their 8 neighbours on a grid x grid board."""
    near = set()
    for cell in cells:
        row, col = divmod(cell, grid)
        for r in range(max(row - 1, 0), min(row + 2, grid)):
            for c in range(max(col - 1, 0), min(col + 2, grid)):
                near.add(r * grid + c)
    return near


def cells_elsewhere(attended: list[int], grid: int, draws: int, rng: np.random.Generator) -> list[list[int]]:
    """`draws` random sets of len(attended) cells away from the attended ones: not attended and not next to them
    (where too few such cells are left, any cell not attended)."""
    far = sorted(set(range(grid * grid)) - neighbours(attended, grid))
    pool = far if len(far) >= len(attended) else sorted(set(range(grid * grid)) - set(attended))
    count = min(len(attended), len(pool))
    return [sorted(int(c) for c in rng.choice(pool, size=count, replace=False)) for _ in range(draws)]


def hide_mask(cells: list[int], grid: int, height: int, width: int, feather: float = FEATHER) -> torch.Tensor:
    """(height, width) float mask in [0, 1]: 1 over the cells' areas of the picture (cell edges at c * side / grid),
    0 elsewhere, the edges ramped by a box blur over `feather` of a cell's side."""
    board = torch.zeros(grid * grid)  # (196,)
    board[list(cells)] = 1.0
    mask = F.interpolate(board.view(1, 1, grid, grid), size=(height, width), mode="nearest")  # (1, 1, H, W)
    radius = int(round(feather * min(height, width) / grid / 2))
    if radius > 0:
        mask = F.avg_pool2d(mask, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)  # (1, 1, H, W)
    return mask[0, 0]  # (H, W)


def hidden_images(images: torch.Tensor, cell_sets: list[list[int]], grid: int) -> torch.Tensor:
    """One normalised photo (1, 3, I, I) -> (H, 3, I, I), one copy per cell set with those cells filled with the
    preprocessing mean (0 after normalisation), feathered."""
    size = images.shape[-1]
    masks = torch.stack([hide_mask(cells, grid, size, size) for cells in cell_sets]).to(images)  # (H, I, I)
    return images * (1.0 - masks[:, None])  # (H, 3, I, I)


def hidden_picture(picture: np.ndarray, cells: list[int], grid: int, mean: tuple[float, ...]) -> np.ndarray:
    """A display photo (H, W, 3) uint8 with the cells filled as the model saw them hidden: the preprocessing mean,
    feathered (the same mask as hidden_images, at the picture's size)."""
    mask = hide_mask(cells, grid, picture.shape[0], picture.shape[1]).numpy()[..., None]  # (H, W, 1)
    fill = np.asarray(mean, dtype=np.float32) * 255.0  # (3,)
    return np.rint(picture * (1.0 - mask) + fill * mask).astype(np.uint8)  # (H, W, 3)


@torch.no_grad()
def encode_in_batches(captioner: Captioner, images: torch.Tensor, batch: int = ENCODER_BATCH) -> torch.Tensor:
    """Normalised images (H, 3, I, I) -> annotation vectors (H, 196, C), `batch` images per encoder call."""
    with evaluating(captioner):
        return torch.cat([captioner.encode(chunk) for chunk in images.split(batch)])  # (H, 196, C)


def input_times_gradient(features: torch.Tensor, scores_of) -> torch.Tensor:
    """features (R, cells, C), scores_of: (R, cells, C) -> (R,) with row r depending on features row r only ->
    (R, cells): each row's features times the gradient of its score, summed over channels."""
    leaf = features.detach().float().contiguous().requires_grad_()  # (R, cells, C) one copy per row
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(scores_of(leaf).sum(), leaf)  # (R, cells, C)
    return (leaf.detach() * grad).sum(dim=2)  # (R, cells)


def word_gradients(captioner: Captioner, features: torch.Tensor, ids: list[int]) -> torch.Tensor:
    """features (1, 196, C), a sentence's word ids -> (n, 196): input-times-gradient of each word's teacher-forced
    log-probability. Row t of one batch of n copies of the photo scores word t, so one backward pass gives all."""
    n, decoder = len(ids), captioner.decoder
    device = next(decoder.parameters()).device
    inputs, targets = sentence_rows([ids] * n, special_ids(captioner.word_map))  # (n, n + 1) each
    captions = torch.cat([inputs, targets[:, -1:]], dim=1).to(device)  # (n, n + 2) <start> w1..wn <end>
    lengths = torch.full((n,), n + 2, device=device)  # (n,)
    words = torch.tensor(ids, device=device)  # (n,)

    def word_log_prob(rows: torch.Tensor) -> torch.Tensor:
        logits = decoder(rows, captions, lengths).logits  # (n, n + 1, V)
        step = torch.arange(n, device=device)  # (n,) row t scores step t
        return torch.log_softmax(logits[step, step].float(), dim=1)[step, words]  # (n,)

    with evaluating(captioner):
        return input_times_gradient(features.to(device).expand(n, -1, -1), word_log_prob)  # (n, 196)


def positive_share(gradient: np.ndarray, cells: list[int]) -> float:
    """gradient (cells,) -> the share of its positive mass inside `cells`; NaN when nothing is positive."""
    positive = np.clip(np.asarray(gradient, dtype=np.float64), 0.0, None)  # (cells,)
    total = positive.sum()
    return float(positive[list(cells)].sum() / total) if total > 0 else float("nan")


def photo_seed(images: torch.Tensor) -> int:
    """A seed from the photo's model input: the same photo draws the same cells elsewhere."""
    return int.from_bytes(hashlib.sha256(images.detach().cpu().numpy().tobytes()).digest()[:8], "little")


def sentence_to_check(
    captioner: Captioner, features: torch.Tensor, text: str | None, beam_size: int
) -> tuple[list[str], list[int]]:
    """The words to check and their ids: the typed text's (ValueError with a message for people when it has no word
    or more than MAX_CHECK_WORDS), or for no text the model's own caption at beam_size."""
    if text is None or (isinstance(text, str) and not text.strip()):
        words = captioner.caption_pools(features, beam_size=beam_size)[0][0].words[:MAX_CHECK_WORDS]
        if not words:
            raise ValueError("The model's caption of this photo has no words: there is nothing to check.")
        return words, [captioner.word_map[w] for w in words]
    count = len(tokenize(text)) if isinstance(text, str) else 0
    if count > MAX_CHECK_WORDS:
        raise ValueError(f"The attention check reads at most {MAX_CHECK_WORDS} words; this text has {count}.")
    tokens = tokenize_probe(text, captioner.word_map, captioner.config.max_caption_len)
    return tokens.words, tokens.ids


def check_attention(
    captioner: Captioner,
    image: ImageInput,
    text: str | None = None,
    *,
    features: torch.Tensor | None = None,
    beam_size: int = DEFAULT_BEAM_SIZE,
    draws: int = ELSEWHERE_DRAWS,
) -> AttentionCheck:
    """Check every word of `text` (None or empty: the model's own caption) on one photo. features: the photo's
    annotation vectors (1, 196, C) when already encoded (the demo's cache). All hidden photos of the caption go
    through the encoder together, ENCODER_BATCH at a time, and are read again in one teacher-forced batch."""
    images = captioner.image_batch(image)  # (1, 3, I, I)
    features = encode_in_batches(captioner, images) if features is None else features  # (1, 196, C)
    words, ids = sentence_to_check(captioner, features, text, beam_size)
    before = probe_features(captioner, features, [ids])[0]
    n, grid = len(ids), before.alphas.shape[-1]
    flat = before.alphas.reshape(n, grid * grid)  # (n, 196)
    here = [attended_cells(alpha) for alpha in flat]
    rng = np.random.default_rng(photo_seed(images))
    elsewhere = [cells_elsewhere(cells, grid, draws, rng) for cells in here]
    cell_sets = [*here, *(cells for word in elsewhere for cells in word)]  # n here, then n * draws elsewhere
    hidden = encode_in_batches(captioner, hidden_images(images, cell_sets, grid))  # (n * (1 + draws), 196, C)
    reread = probe_features(captioner, hidden, [ids] * len(cell_sets))
    word = np.arange(n)  # (n,) row t of each block scores word t
    log_probs = np.stack([p.log_probs for p in reread])  # (n * (1 + draws), n)
    log_here = log_probs[:n][word, word]  # (n,)
    log_elsewhere = log_probs[n:].reshape(n, draws, n)[word, :, word]  # (n, draws)
    gradient = word_gradients(captioner, features, ids).cpu().numpy()  # (n, 196)
    return AttentionCheck(
        words=list(words),
        ids=list(ids),
        probs=before.probs,  # (n,)
        probs_hidden_here=np.exp(log_here.astype(np.float64)),  # (n,)
        probs_hidden_elsewhere=np.exp(log_elsewhere.astype(np.float64)).mean(axis=1),  # (n,)
        hidden_cells=here,
        elsewhere_cells=elsewhere,
        alphas=before.alphas,  # (n, 14, 14)
        gradient=gradient.reshape(n, grid, grid),  # (n, 14, 14)
    )


def drops(checked: AttentionCheck) -> tuple[np.ndarray, np.ndarray]:
    """(n,) probability lost by each word when its attended cells are hidden, and when cells elsewhere are."""
    return checked.probs - checked.probs_hidden_here, checked.probs - checked.probs_hidden_elsewhere
