"""LSTM decoder with soft attention and a gated context (Show, Attend and Tell, section 3.1.2)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from captioning.attention import Attention


@dataclass
class DecoderOutput:
    """Teacher-forced outputs, padded to the longest caption; mask marks real (predicted) steps."""

    logits: torch.Tensor  # (B, L, V)
    alphas: torch.Tensor  # (B, L, 196)
    mask: torch.Tensor  # (B, L) bool


@dataclass
class DecoderState:
    """Per-image tensors computed once before decoding, plus the recurrent state."""

    features: torch.Tensor  # (B, 196, C)
    image_projection: torch.Tensor  # (B, 196, A)
    hidden: torch.Tensor  # (B, D)
    cell: torch.Tensor  # (B, D)

    def select(self, index: torch.Tensor) -> DecoderState:
        """Rows picked (and possibly repeated) by index, e.g. to expand images into beams."""
        return DecoderState(self.features[index], self.image_projection[index], self.hidden[index], self.cell[index])


def lstm_pointwise(gates: torch.Tensor, cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """nn.LSTMCell's update from pre-activations (i, f, g, o order), kept in fp32 under autocast."""
    i, f, g, o = gates.float().chunk(4, dim=1)  # 4 x (B, D)
    cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)  # (B, D)
    hidden = torch.sigmoid(o) * torch.tanh(cell)  # (B, D)
    return hidden, cell


class Decoder(nn.Module):
    """Predicts the next word from the previous word, the gated attention context and the LSTM state."""

    def __init__(
        self,
        vocab_size: int,
        encoder_dim: int,
        embed_dim: int = 512,
        attention_dim: int = 512,
        decoder_dim: int = 512,
        dropout: float = 0.5,
    ):
        super().__init__()
        self.embed_dim = embed_dim
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.attention = Attention(encoder_dim, decoder_dim, attention_dim)
        self.init_h = nn.Linear(encoder_dim, decoder_dim)
        self.init_c = nn.Linear(encoder_dim, decoder_dim)
        self.f_beta = nn.Linear(decoder_dim, encoder_dim)
        self.lstm = nn.LSTMCell(embed_dim + encoder_dim, decoder_dim)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(decoder_dim, vocab_size)
        self.init_weights()

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

    def start(self, features: torch.Tensor) -> DecoderState:
        """Once per image: attention projection and h0, c0 from the mean annotation through two MLPs."""
        mean = features.mean(dim=1)  # (N, C)
        image_projection = self.attention.project_image(features)  # (N, 196, A) bf16 under autocast
        features = features.to(image_projection.dtype)  # (N, 196, C) cast once, not at every step
        return DecoderState(features, image_projection, self.init_h(mean).float(), self.init_c(mean).float())

    def step(self, words: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, torch.Tensor, DecoderState]:
        """One word for each row: words (B,) -> logits (B, V), alpha (B, 196), next state."""
        embedded = self.embedding(words)  # (B, E)
        context, alpha = self.attention(state.features, state.image_projection, state.hidden)  # (B, C), (B, 196)
        gate = torch.sigmoid(self.f_beta(state.hidden))  # (B, C)
        gates = self.lstm_gates(embedded, gate * context, state.hidden)  # (B, 4D)
        hidden, cell = lstm_pointwise(gates, state.cell)  # (B, D), (B, D)
        logits = self.fc(self.dropout(hidden))  # (B, V)
        return logits, alpha, DecoderState(state.features, state.image_projection, hidden, cell)

    def lstm_gates(self, embedded: torch.Tensor, context: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """LSTMCell pre-activations for input [E y; z] (B, E + C) and state h (B, D)."""
        x = torch.cat([embedded.to(context.dtype), context], dim=1)  # (B, E + C)
        bias = self.lstm.bias_ih + self.lstm.bias_hh  # (4D,)
        return F.linear(x, self.lstm.weight_ih, bias) + F.linear(hidden, self.lstm.weight_hh)  # (B, 4D)

    def forward(
        self,
        features: torch.Tensor,
        captions: torch.Tensor,
        lengths: torch.Tensor,
        image_index: torch.Tensor | None = None,
    ) -> DecoderOutput:
        """Teacher forcing. features (N, 196, C); captions (B, T) = <start> w.. <end> <pad>..; lengths (B,) incl.
        <start>/<end>; image_index (B,) maps each caption to its image so an image's captions share its projection.
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

        embedded = self.embedding(captions[order, :steps])  # (B, L, E)
        embed_weight, context_weight = self.lstm.weight_ih.split([self.embed_dim, features.size(2)], dim=1)
        context_weight = context_weight.to(state.image_projection.dtype)  # (4D, C) cast once per forward
        word_gates = F.linear(embedded, embed_weight, self.lstm.bias_ih + self.lstm.bias_hh)  # (B, L, 4D)

        # Everything computed from h at each step in one GEMM: decoder_att(h), f_beta(h) and W_hh h.
        hidden_weight = torch.cat([self.attention.decoder_att.weight, self.f_beta.weight, self.lstm.weight_hh])
        hidden_bias = torch.cat([self.attention.decoder_att.bias, self.f_beta.bias, self.lstm.bias_hh.new_zeros(
            self.lstm.weight_hh.size(0))])  # (A + C + 4D,)
        hidden_weight = hidden_weight.to(state.image_projection.dtype)  # (A + C + 4D, D)
        splits = [self.attention.decoder_att.out_features, self.f_beta.out_features, self.lstm.weight_hh.size(0)]

        hidden, cell = state.hidden, state.cell  # (B, D), (B, D)
        hiddens, alphas = [], []
        for t, rows in enumerate(active):
            if rows < hidden.size(0):  # finished captions drop out of the (sorted) batch
                hidden, cell = hidden[:rows], cell[:rows]  # (b, D)
                state = DecoderState(state.features[:rows], state.image_projection[:rows], hidden, cell)
            att2, gate, recurrent = F.linear(hidden, hidden_weight, hidden_bias).split(splits, dim=1)  # (b, A|C|4D)
            context, alpha = self.attention.attend(state.features, state.image_projection, att2)  # (b, C), (b, 196)
            gated = torch.sigmoid(gate) * context  # (b, C)
            gates = word_gates[:rows, t] + F.linear(gated, context_weight) + recurrent  # (b, 4D)
            hidden, cell = lstm_pointwise(gates, cell)  # (b, D), (b, D)
            hiddens.append(hidden)
            alphas.append(alpha)

        packed_hidden = torch.cat(hiddens)  # (sum active, D) in time-major order
        packed_logits = self.fc(self.dropout(packed_hidden))  # (sum active, V)
        time_major_mask = mask.t()  # (L, B)
        logits = packed_logits.new_zeros(steps, captions.size(0), packed_logits.size(1))  # (L, B, V)
        logits[time_major_mask] = packed_logits
        alpha_pad = torch.cat(alphas).new_zeros(steps, captions.size(0), features.size(1))  # (L, B, 196)
        alpha_pad[time_major_mask] = torch.cat(alphas)
        unsort = torch.argsort(order)  # (B,)
        return DecoderOutput(
            logits=logits.transpose(0, 1)[unsort],  # (B, L, V)
            alphas=alpha_pad.transpose(0, 1)[unsort],  # (B, L, 196)
            mask=mask[unsort],  # (B, L)
        )
