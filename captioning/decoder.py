"""LSTM decoder with soft or hard attention and a gated context (Show, Attend and Tell, sections 3.1.2 and 4)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from captioning.attention import Attention, RowLayout, hard_context
from captioning.config import DecoderConfig
from captioning.step_linear import StepLinear

# hard attention in training: chance that a step reads the expected (soft) context instead of a sampled location
SOFT_CONTEXT_PROBABILITY = 0.5


@dataclass
class DecoderOutput:
    """Teacher-forced outputs, padded to the longest caption; mask marks real (predicted) steps."""

    logits: torch.Tensor  # (B, L, V)
    alphas: torch.Tensor  # (B, L, 196)
    mask: torch.Tensor  # (B, L) bool
    location_log_probs: torch.Tensor | None = None  # (B, L) hard training: log p(s_t) of sampled locations, else 0


@dataclass
class StepWeights:
    """The weights one decoding step uses, stacked and cast to the compute dtype once per forward or search."""

    from_hidden: StepLinear  # (A + C, D) rows: attention.decoder_att, f_beta (both read h_{t-1})
    from_hidden_bias: torch.Tensor  # (A + C,)
    word: torch.Tensor  # (4D, E) the word columns of lstm.weight_ih
    recurrent: StepLinear  # (4D, C + D) [context columns of lstm.weight_ih | lstm.weight_hh]
    bias: torch.Tensor  # (4D,) lstm.bias_ih + lstm.bias_hh
    attention_dim: int  # A: where from_hidden's rows split

    def word_gates(self, embedded: torch.Tensor) -> torch.Tensor:
        """The word half of the LSTM pre-activations, W_e E y + b (..., E) -> (..., 4D); for all steps at once."""
        return F.linear(embedded.to(self.word.dtype), self.word, self.bias)  # (..., 4D)

    def project_hidden(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Everything read from h_{t-1} before the cell, in one GEMM: attention's W_h h and the gate's f_beta(h)."""
        hidden = hidden.to(self.bias.dtype)  # (B, D) h is kept in fp32; the GEMMs run in the compute dtype
        both = self.from_hidden(hidden) + self.from_hidden_bias  # (B, A + C)
        att2, gate = both.split([self.attention_dim, both.size(1) - self.attention_dim], dim=1)  # (B, A), (B, C)
        return att2, gate


@dataclass
class DecoderState:
    """Per-image tensors and step weights computed once before decoding, plus the recurrent state of each row (a
    caption, beam or sample); rows of one image share its features (layout)."""

    features: torch.Tensor  # (N, 196, C) one copy per image
    image_projection: torch.Tensor  # (N, 196, A) one per image
    hidden: torch.Tensor  # (B, D)
    cell: torch.Tensor  # (B, D)
    weights: StepWeights
    layout: RowLayout  # the image (and slot) of each row
    gate: torch.Tensor | None = None  # (B,) mean of the last step's gate beta = sigmoid(f_beta(h)); None before
    location_log_prob: torch.Tensor | None = None  # (B,) hard training: log p of the last step's sampled location

    def select(self, index: torch.Tensor) -> DecoderState:
        """Rows picked (and possibly repeated) by index, e.g. to expand images into beams."""
        state = DecoderState(
            self.features,
            self.image_projection,
            self.hidden[index],
            self.cell[index],
            self.weights,
            self.layout.select(index),
        )
        state.gate = None if self.gate is None else self.gate[index]  # (B',)
        return state

    def first(self, rows: int) -> DecoderState:
        """The first rows only: in length-sorted teacher forcing, the captions still decoding."""
        return DecoderState(
            self.features,
            self.image_projection,
            self.hidden[:rows],
            self.cell[:rows],
            self.weights,
            self.layout.first(rows),
        )

    def updated(self, hidden: torch.Tensor, cell: torch.Tensor) -> DecoderState:
        """The same rows with a new (h, c)."""
        return DecoderState(self.features, self.image_projection, hidden, cell, self.weights, self.layout)


def lstm_cell(
    word_gates: torch.Tensor, context: torch.Tensor, hidden: torch.Tensor, cell: torch.Tensor, weights: StepWeights
) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTMCell update on input [E y; z] and state (h, c) -> new (h, c). word_gates = W_e E y + b (B, 4D),
    context = the gated attention context z (B, C); hard attention and sampling reuse it unchanged."""
    inputs = torch.cat([context, hidden.to(context.dtype)], dim=1)  # (B, C + D)
    gates = word_gates + weights.recurrent(inputs)  # (B, 4D)
    i, f, g, o = gates.float().chunk(4, dim=1)  # 4 x (B, D) i, f, g, o as in nn.LSTMCell; fp32 under autocast
    cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)  # (B, D)
    hidden = torch.sigmoid(o) * torch.tanh(cell)  # (B, D)
    return hidden, cell


class Decoder(nn.Module):
    """Predicts the next word from the previous word, the gated attention context and the LSTM state."""

    def __init__(self, vocab_size: int, encoder_dim: int, config: DecoderConfig | None = None):
        super().__init__()
        config = config or DecoderConfig()
        self.config = config  # sizes and attention mode
        self.embedding = nn.Embedding(vocab_size, config.embed_dim)
        self.attention = Attention(encoder_dim, config.decoder_dim, config.attention_dim)
        self.init_h = nn.Linear(encoder_dim, config.decoder_dim)
        self.init_c = nn.Linear(encoder_dim, config.decoder_dim)
        self.f_beta = nn.Linear(config.decoder_dim, encoder_dim)
        self.lstm = nn.LSTMCell(config.embed_dim + encoder_dim, config.decoder_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(config.decoder_dim, vocab_size)
        self.init_weights()

    @property
    def hard(self) -> bool:
        """Hard attention: one location per word, sampled in training, the most likely one in decoding."""
        return self.config.attention == "hard"

    def init_weights(self) -> None:
        """As designed: embedding, output and LSTM weight matrices U(-0.1, 0.1); output and LSTM biases zero."""
        for weight in (self.embedding.weight, self.fc.weight, self.lstm.weight_ih, self.lstm.weight_hh):
            nn.init.uniform_(weight, -0.1, 0.1)
        for bias in (self.fc.bias, self.lstm.bias_ih, self.lstm.bias_hh):
            nn.init.zeros_(bias)

    def load_pretrained_embeddings(self, embeddings: torch.Tensor) -> None:
        """Copy (V, E) word vectors into the embedding table."""
        if embeddings.shape != self.embedding.weight.shape:
            raise ValueError(f"embeddings {tuple(embeddings.shape)} != {tuple(self.embedding.weight.shape)}")
        self.embedding.weight.data.copy_(embeddings)

    def fine_tune_embeddings(self, enabled: bool = True) -> None:
        """Train the embedding table (default) or keep it fixed, e.g. for pretrained vectors."""
        self.embedding.weight.requires_grad = enabled

    def step_weights(self, dtype: torch.dtype) -> StepWeights:
        """The per-step weights stacked (two GEMMs per step instead of five), cast to dtype once, and with their
        gradients computed once for all steps (StepLinear)."""
        embed_weight, context_weight = self.lstm.weight_ih.split(
            [self.embedding.embedding_dim, self.f_beta.out_features], dim=1
        )
        return StepWeights(
            from_hidden=StepLinear(torch.cat([self.attention.decoder_att.weight, self.f_beta.weight]).to(dtype)),
            from_hidden_bias=torch.cat([self.attention.decoder_att.bias, self.f_beta.bias]).to(dtype),  # (A + C,)
            word=embed_weight.to(dtype),  # (4D, E)
            recurrent=StepLinear(torch.cat([context_weight, self.lstm.weight_hh], dim=1).to(dtype)),
            bias=(self.lstm.bias_ih + self.lstm.bias_hh).to(dtype),  # (4D,)
            attention_dim=self.attention.decoder_att.out_features,
        )

    def start(self, features: torch.Tensor) -> DecoderState:
        """Once per image: attention projection and h0, c0 from the mean annotation through two MLPs."""
        mean = features.mean(dim=1)  # (N, C)
        image_projection = self.attention.project_image(features)  # (N, 196, A) bf16 under autocast
        dtype = image_projection.dtype  # the compute dtype: bf16 under autocast
        features = features.to(dtype)  # (N, 196, C) cast once, not at every step
        h0, c0 = self.init_h(mean).float(), self.init_c(mean).float()  # (N, D), (N, D)
        layout = RowLayout.identity(features.size(0), features.device)
        return DecoderState(features, image_projection, h0, c0, self.step_weights(dtype), layout)

    def attend_and_update(
        self,
        word_gates: torch.Tensor,
        state: DecoderState,
        soft_context_probability: float = SOFT_CONTEXT_PROBABILITY,
        sample_locations: bool | None = None,
    ) -> tuple[torch.Tensor, DecoderState]:
        """The recurrence for one step, shared by teacher forcing and search: attend from h_{t-1}, gate the
        context, update the LSTM. word_gates (B, 4D) -> alpha (B, 196), next state. Hard attention replaces the
        expected context by one location's vector (sampled, else soft with soft_context_probability, when
        sample_locations, which defaults to training mode; otherwise the most likely location, as in decoding)."""
        att2, gate = state.weights.project_hidden(state.hidden)  # (B, A), (B, C)
        context, alpha = self.attention.attend(
            state.features, state.image_projection, att2, state.layout
        )  # (B, C), (B, 196)
        location_log_prob = None
        if self.hard:
            sample = self.training if sample_locations is None else sample_locations
            context, location_log_prob = hard_context(
                state.features, alpha, context, sample, soft_context_probability, state.layout.image
            )  # (B, C), (B,)
        gated = torch.sigmoid(gate) * context  # (B, C)
        hidden, cell = lstm_cell(word_gates, gated, state.hidden, state.cell, state.weights)  # (B, D), (B, D)
        next_state = state.updated(hidden, cell)
        next_state.gate = torch.sigmoid(gate.detach()).float().mean(dim=1)  # (B,) how much image context came in
        next_state.location_log_prob = location_log_prob  # (B,) or None
        return alpha, next_state

    def step(
        self, words: torch.Tensor, state: DecoderState, sample_locations: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, DecoderState]:
        """One word for each row: words (B,) -> logits (B, V), alpha (B, 196), next state. sample_locations: as in
        attend_and_update (hard attention only)."""
        word_gates = state.weights.word_gates(self.embedding(words))  # (B, 4D)
        alpha, state = self.attend_and_update(word_gates, state, sample_locations=sample_locations)  # (B, 196)
        logits = self.fc(self.dropout(state.hidden))  # (B, V)
        return logits, alpha, state

    def forward(
        self,
        features: torch.Tensor,
        captions: torch.Tensor,
        lengths: torch.Tensor,
        image_index: torch.Tensor | None = None,
        soft_context_probability: float = SOFT_CONTEXT_PROBABILITY,
    ) -> DecoderOutput:
        """Teacher forcing. features (N, 196, C); captions (B, T) = <start> w.. <end> <pad>..; lengths (B,) incl.
        <start>/<end>; image_index (B,) maps each caption to its image so an image's captions share its projection.
        soft_context_probability: hard attention in training only, the chance that a step keeps the soft context.
        """
        if image_index is None:
            image_index = torch.arange(captions.size(0), device=captions.device)  # (B,)
        decode_lengths = lengths - 1  # (B,)
        steps = int(decode_lengths.max())
        order = torch.argsort(decode_lengths, descending=True, stable=True)  # (B,)
        decode_lengths = decode_lengths[order]  # (B,) longest first, so step t uses a prefix of rows
        state = self.start(features).select(image_index[order])  # per image once, then (B, ...) rows
        mask = decode_lengths[:, None] > torch.arange(steps, device=captions.device)  # (B, L)
        active = mask.sum(dim=0).tolist()  # rows still decoding at each step

        # The word half of the LSTM input for all steps in one GEMM, time-major so that unbind (one backward
        # node) hands each step its slice rather than a full-size zero-padded gradient per step.
        word_gates = state.weights.word_gates(self.embedding(captions[order, :steps].t()))  # (L, B, 4D)
        hiddens, alphas, location_log_probs = [], [], []
        for rows, step_word_gates in zip(active, word_gates.unbind(0)):  # (B, 4D) per step
            if rows < state.hidden.size(0):  # finished captions drop out of the (sorted) batch
                state = state.first(rows)
            alpha, state = self.attend_and_update(step_word_gates[:rows], state, soft_context_probability)  # (b, 196)
            hiddens.append(state.hidden)
            alphas.append(alpha)
            location_log_probs.append(state.location_log_prob)  # (b,) or None

        packed_hidden = torch.cat(hiddens)  # (sum active, D) in time-major order
        packed_logits = self.fc(self.dropout(packed_hidden))  # (sum active, V)
        time_major_mask = mask.t()  # (L, B)
        logits = packed_logits.new_zeros(steps, captions.size(0), packed_logits.size(1))  # (L, B, V)
        logits[time_major_mask] = packed_logits
        alpha_pad = torch.cat(alphas).new_zeros(steps, captions.size(0), features.size(1))  # (L, B, 196)
        alpha_pad[time_major_mask] = torch.cat(alphas)
        unsort = torch.argsort(order)  # (B,)
        location_pad = None
        if location_log_probs[0] is not None:  # hard attention in training
            location_pad = alpha_pad.new_zeros(steps, captions.size(0), dtype=torch.float32)  # (L, B)
            location_pad[time_major_mask] = torch.cat(location_log_probs)
            location_pad = location_pad.t()[unsort]  # (B, L)
        return DecoderOutput(
            logits=logits.transpose(0, 1)[unsort],  # (B, L, V)
            alphas=alpha_pad.transpose(0, 1)[unsort],  # (B, L, 196)
            mask=mask[unsort],  # (B, L)
            location_log_probs=location_pad,  # (B, L) or None
        )
