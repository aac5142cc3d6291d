"""Self-critical sequence training (Rennie et al. 2017): sample captions, reward them with CIDEr-D, and push up
the log-probability of those that beat their baseline (the mean of the image's other samples, or greedy)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from captioning.cider import CiderD
from captioning.decoder import Decoder
from captioning.model import Captioner
from captioning.vocab import special_ids

# self-critical training's defaults: TrainConfig's (its --scst-* flags) and SelfCriticalLoss's read them from here
SCST_SAMPLES = 5  # captions sampled per image
SCST_BASELINES = ("mean", "greedy")  # the mean of the image's other samples | the image's greedy caption
SCST_BASELINE = "mean"
SCST_MAX_LEN = 20  # longest sampled caption, in words with <end>


@dataclass
class Samples:
    """K sampled captions per image, rows image-major (image 0's K samples first)."""

    tokens: torch.Tensor  # (B*K, T) word ids, <end> included, 0 after it
    log_probs: torch.Tensor  # (B*K, T) log p of each sampled word (with gradient), 0 after <end>
    mask: torch.Tensor  # (B*K, T) bool: real words, <end> included


def sample_captions(
    decoder: Decoder,
    features: torch.Tensor,
    k: int,
    start_id: int,
    end_id: int,
    banned: Sequence[int],
    max_len: int = SCST_MAX_LEN,
    temperature: float = 1.0,
) -> Samples:
    """Multinomial samples; `banned` ids (<pad>, <start>, <unk>) are never drawn, nor <end> first; log_probs are
    those of the distribution sampled from: the model's softmax renormalised without the banned words, so that
    the policy gradient is exact. A hard-attention decoder reads its most likely location at every step, as when
    decoding, so the words are the only sampled choices and the policy trained is the one the captions come from.

    The image projection is computed once per image and shared by its K rows, as in the beam search.
    """
    batch, device = features.size(0), features.device
    state = decoder.start(features).select(torch.arange(batch, device=device).repeat_interleave(k))  # (B*K, ...)
    rows = batch * k
    words = torch.full((rows,), start_id, dtype=torch.long, device=device)  # (B*K,)
    alive = torch.ones(rows, dtype=torch.bool, device=device)  # (B*K,)
    tokens, log_probs, masks = [], [], []
    for step in range(max_len):
        logits, _, state = decoder.step(words, state, sample_locations=False)  # (B*K, V)
        never = torch.tensor([*banned, *((end_id,) if step == 0 else ())], device=device)
        logits = logits.float().index_fill(1, never, float("-inf"))  # (B*K, V) the policy never puts mass there
        scores = torch.log_softmax(logits / temperature, dim=1)  # (B*K, V) log-probs of the policy sampled from
        words = torch.multinomial(scores.detach().exp(), 1).squeeze(1)  # (B*K,)
        if step == max_len - 1:  # a caption cut at max_len still ends
            words = torch.where(alive, torch.full_like(words, end_id), words)
        picked = scores.gather(1, words[:, None]).squeeze(1)  # (B*K,)
        tokens.append(torch.where(alive, words, torch.zeros_like(words)))
        log_probs.append(torch.where(alive, picked, torch.zeros_like(picked)))
        masks.append(alive)
        alive = alive & (words != end_id)
        if not bool(alive.any()):
            break
    return Samples(torch.stack(tokens, 1), torch.stack(log_probs, 1), torch.stack(masks, 1))  # (B*K, T) each


@contextmanager
def dropout_off(module: nn.Module) -> Iterator[None]:
    """Every nn.Dropout inside `module` in eval mode for the block (the rest keeps its mode), then restored."""
    dropouts = [m for m in module.modules() if isinstance(m, nn.Dropout)]
    modes = [m.training for m in dropouts]
    for m in dropouts:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(dropouts, modes):
            m.train(mode)


def caption_texts(tokens: torch.Tensor, id_to_word: dict[int, str], end_id: int) -> list[str]:
    """Space-joined words of each row up to (not including) <end>."""
    texts = []
    for row in tokens.tolist():
        words = []
        for token in row:
            if token == end_id or token == 0:
                break
            words.append(id_to_word[token])
        texts.append(" ".join(words))
    return texts


def cider_rewards(
    scorer: CiderD, texts: Sequence[str], references: Sequence[Sequence[str]], keys: Sequence[object]
) -> torch.Tensor:
    """CIDEr-D of each sampled caption against its image's references; texts are image-major (B*K,)."""
    k = len(texts) // len(references)
    rewards = [scorer.score(text, references[i // k], key=keys[i // k]) for i, text in enumerate(texts)]
    return torch.tensor(rewards, dtype=torch.float32).view(len(references), k)  # (B, K)


def leave_one_out_advantage(rewards: torch.Tensor) -> torch.Tensor:
    """rewards (B, K) -> r - mean of the image's other K-1 rewards (the "new SCST" baseline)."""
    k = rewards.size(1)
    baseline = (rewards.sum(dim=1, keepdim=True) - rewards) / (k - 1)  # (B, K)
    return rewards - baseline


def greedy_advantage(rewards: torch.Tensor, greedy_rewards: torch.Tensor) -> torch.Tensor:
    """rewards (B, K) minus the reward of the image's greedy caption (B,): the original SCST baseline."""
    return rewards - greedy_rewards[:, None]


def policy_gradient_loss(samples: Samples, advantage: torch.Tensor) -> torch.Tensor:
    """-(r - b) log p of every sampled word (<end> included), averaged over the sampled words."""
    weights = advantage.reshape(-1, 1).to(samples.log_probs.device).detach()  # (B*K, 1)
    mask = samples.mask.float()  # (B*K, T)
    return -(weights * samples.log_probs * mask).sum() / mask.sum()


@dataclass
class SelfCriticalResult:
    """One batch of self-critical training: the loss and what the log averages."""

    loss: torch.Tensor  # () policy-gradient loss
    mean_reward: float  # mean CIDEr-D of the samples
    images: int

    def log_values(self) -> dict[str, tuple[float, int]]:
        """{name: (batch average, weight)}, logged as train_reward."""
        return {"reward": (self.mean_reward, self.images)}


class SelfCriticalLoss(nn.Module):
    """(pixels or cached features, captions, lengths, image_index, indices) -> SelfCriticalResult: K samples per
    image rewarded by CIDEr-D against the image's references (looked up by dataset index), baseline = the mean of
    the image's other samples ("mean") or its greedy caption ("greedy"). Same forward as TeacherForcedLoss."""

    def __init__(
        self,
        captioner: Captioner,
        to_features: Callable[[torch.Tensor], torch.Tensor],
        scorer: CiderD,
        references: Sequence[Sequence[str]],
        samples_per_image: int = SCST_SAMPLES,
        baseline: str = SCST_BASELINE,
        max_len: int = SCST_MAX_LEN,
        sample_with_dropout: bool = False,
    ):
        super().__init__()
        if baseline not in SCST_BASELINES:
            raise ValueError(f"baseline must be 'mean' or 'greedy', not {baseline!r}")
        if baseline == "mean" and samples_per_image < 2:
            raise ValueError("the 'mean' baseline needs at least 2 samples per image")
        self.captioner = captioner
        self.to_features = to_features
        self.scorer = scorer
        self.references = references
        self.k = samples_per_image
        self.baseline = baseline
        self.max_len = max_len
        self.sample_with_dropout = sample_with_dropout
        self.ids = special_ids(captioner.word_map)

    def forward(self, inputs, captions, lengths, image_index, indices) -> SelfCriticalResult:
        features = self.to_features(inputs)  # (N, 196, C)
        keys = indices.tolist()
        references = [self.references[i] for i in keys]
        banned = (self.ids.pad, self.ids.start, self.ids.unk)
        with nullcontext() if self.sample_with_dropout else dropout_off(self.captioner):
            samples = sample_captions(
                self.captioner.decoder, features, self.k, self.ids.start, self.ids.end, banned, self.max_len
            )
        texts = caption_texts(samples.tokens, self.captioner.id_to_word, self.ids.end)
        rewards = cider_rewards(self.scorer, texts, references, keys)  # (N, K)
        if self.baseline == "mean":
            advantage = leave_one_out_advantage(rewards)  # (N, K)
        else:
            advantage = greedy_advantage(rewards, self.greedy_rewards(features, references, keys))  # (N, K)
        return SelfCriticalResult(policy_gradient_loss(samples, advantage), float(rewards.mean()), len(keys))

    @torch.no_grad()
    def greedy_rewards(self, features: torch.Tensor, references, keys) -> torch.Tensor:
        """CIDEr-D of each image's greedy caption (B,), decoded in eval mode (no dropout)."""
        was_training = self.captioner.training
        self.captioner.eval()
        captions = self.captioner.caption_features(features, beam_size=1, max_len=self.max_len)
        self.captioner.train(was_training)
        texts = [c.text for c in captions]
        return cider_rewards(self.scorer, texts, references, keys).view(-1)  # (B,)
