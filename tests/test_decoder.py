"""Decoder: one image projection per forward, init, teacher forcing == step by step and == the plain per-step
reference, masks and padding, dropout, embeddings, bf16 autocast, and a hard model's step at the argmax location."""

from __future__ import annotations

import pytest
import torch
from conftest import C, V, features, hard_captioner, make_batch, make_decoder

from captioning.decoder import Decoder, DecoderOutput
from captioning.loss import caption_loss


def test_image_projection_computed_once_per_forward_and_shared_by_captions():
    decoder = make_decoder()
    calls = []
    decoder.attention.encoder_att.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    captions, lengths = make_batch([9, 5, 7, 3, 6, 8])
    decoder(features(3), captions, lengths, image_index=torch.tensor([0, 0, 1, 1, 2, 2]))
    assert calls == [torch.Size([3, 196, C])]  # once, on the 3 images (not 6 captions, not 8 steps)

    calls.clear()
    captions, lengths = make_batch([6, 4, 9, 5, 7])
    decoder(features(1), captions, lengths, image_index=torch.zeros(5, dtype=torch.long))
    assert len(calls) == 1 and calls[0][0] == 1


def test_shared_image_index_equals_repeated_features():
    decoder = make_decoder().eval()
    captions, lengths = make_batch([9, 5, 7, 3])
    index = torch.tensor([1, 0, 1, 0])
    feats = features(2)
    shared = decoder(feats, captions, lengths, image_index=index)
    repeated = decoder(feats[index], captions, lengths)
    assert torch.allclose(shared.logits, repeated.logits, atol=1e-5)
    assert torch.allclose(shared.alphas, repeated.alphas, atol=1e-6)


def test_init_weights_as_designed():
    decoder = make_decoder()
    for weight in (decoder.embedding.weight, decoder.fc.weight, decoder.lstm.weight_ih, decoder.lstm.weight_hh):
        assert weight.abs().max() <= 0.1
        assert weight.std() > 0.04  # uniform on [-0.1, 0.1] has std 0.058, not left at zero
    for bias in (decoder.fc.bias, decoder.lstm.bias_ih, decoder.lstm.bias_hh):
        assert torch.count_nonzero(bias) == 0


def test_teacher_forcing_equals_step_by_step_on_real_positions():
    decoder = make_decoder().eval()
    lengths_list = [7, 4, 9, 2, 5]
    captions, lengths = make_batch(lengths_list)
    feats = features(5)
    with torch.no_grad():
        out = decoder(feats, captions, lengths)
        steps = max(lengths_list) - 1
        assert out.mask.shape == (5, steps) and out.mask.dtype == torch.bool
        assert out.mask.sum(dim=1).tolist() == [n - 1 for n in lengths_list]
        assert out.logits.shape == (5, steps, V) and out.alphas.shape == (5, steps, 196)
        state = decoder.start(feats)
        for t in range(steps):
            logits, alpha, state = decoder.step(captions[:, t], state)
            real = out.mask[:, t]
            assert torch.allclose(out.logits[real, t], logits[real], atol=1e-5)
            assert torch.allclose(out.alphas[real, t], alpha[real], atol=1e-6)
    pad = ~out.mask
    assert torch.count_nonzero(out.alphas[pad]) == 0
    assert torch.count_nonzero(out.logits[pad]) == 0
    assert torch.allclose(out.alphas[out.mask].sum(dim=1), torch.ones(int(out.mask.sum())), atol=1e-5)


def plain_reference(decoder: Decoder, feats: torch.Tensor, captions: torch.Tensor, lengths: torch.Tensor):
    """Teacher forcing written the plain way from the decoder's modules (nn.LSTMCell, Attention.forward), all
    captions for all steps, no sorting or fusion: logits (B, L, V), alphas (B, L, 196), mask (B, L)."""
    steps = int(lengths.max()) - 1
    hidden, cell = decoder.init_h(feats.mean(dim=1)), decoder.init_c(feats.mean(dim=1))
    projection = decoder.attention.project_image(feats)
    logits, alphas = [], []
    for t in range(steps):
        context, alpha = decoder.attention(feats, projection, hidden)
        gated = torch.sigmoid(decoder.f_beta(hidden)) * context
        hidden, cell = decoder.lstm(torch.cat([decoder.embedding(captions[:, t]), gated], dim=1), (hidden, cell))
        logits.append(decoder.fc(decoder.dropout(hidden)))
        alphas.append(alpha)
    mask = (lengths - 1)[:, None] > torch.arange(steps)
    return torch.stack(logits, 1) * mask[..., None], torch.stack(alphas, 1) * mask[..., None], mask


def test_teacher_forcing_loss_and_gradients_equal_the_plain_per_step_reference():
    decoder = make_decoder().eval()
    captions, lengths = make_batch([7, 4, 9, 2, 5, 9])
    feats = features(6)
    out = decoder(feats, captions, lengths)
    loss = caption_loss(out, captions, attention_penalty=1.0)[0]
    grads = torch.autograd.grad(loss, list(decoder.parameters()))
    reference = DecoderOutput(*plain_reference(decoder, feats, captions, lengths))
    reference_loss = caption_loss(reference, captions, attention_penalty=1.0)[0]
    reference_grads = torch.autograd.grad(reference_loss, list(decoder.parameters()))
    assert torch.equal(out.mask, reference.mask)
    assert torch.allclose(out.logits, reference.logits, atol=1e-5)
    assert loss.item() == pytest.approx(reference_loss.item(), abs=1e-5)
    for (name, _), grad, expected in zip(decoder.named_parameters(), grads, reference_grads, strict=True):
        assert torch.allclose(grad, expected, atol=1e-6, rtol=1e-4), name
    assert all(grad.abs().sum() > 0 for grad in grads)  # every parameter, incl. W_hh and f_beta, is trained


def test_dropout_is_active_in_train_mode_only():
    decoder = make_decoder(dropout=0.5)
    captions, lengths = make_batch([9, 5])
    feats = features(2)
    torch.manual_seed(0)
    first = decoder(feats, captions, lengths).logits
    second = decoder(feats, captions, lengths).logits
    assert not torch.allclose(first, second)
    decoder.eval()
    assert torch.equal(decoder(feats, captions, lengths).logits, decoder(feats, captions, lengths).logits)


def test_embeddings_fixed_or_trained_and_pretrained_copy():
    decoder = make_decoder()
    assert decoder.embedding.weight.requires_grad
    decoder.fine_tune_embeddings(False)
    assert not decoder.embedding.weight.requires_grad
    decoder.fine_tune_embeddings(True)
    assert decoder.embedding.weight.requires_grad

    vectors = torch.randn(V, 12, generator=torch.Generator().manual_seed(3))
    decoder.load_pretrained_embeddings(vectors)
    assert torch.equal(decoder.embedding.weight.data, vectors)
    vectors.zero_()  # a copy, not a view of the caller's tensor
    assert decoder.embedding.weight.abs().sum() > 0
    with pytest.raises(ValueError, match=r"\(20, 13\)"):
        decoder.load_pretrained_embeddings(torch.zeros(V, 13))


def test_bf16_autocast_forward_is_close_to_fp32():
    decoder = make_decoder().eval()
    torch.nn.init.normal_(decoder.fc.weight, std=20.0)  # peaked word distributions: the loss is not just log(V)
    captions, lengths = make_batch([7, 4, 9, 2, 5])
    feats = features(5)
    with torch.no_grad():
        fp32 = decoder(feats, captions, lengths)
        reference = caption_loss(fp32, captions, 1.0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = decoder(feats, captions, lengths)
            loss = caption_loss(out, captions, 1.0)
    assert torch.equal(out.mask, fp32.mask)
    assert all(torch.isfinite(part) for part in loss)
    for part, expected in zip(loss, reference):
        assert part.item() == pytest.approx(expected.item(), rel=3e-2)
    assert torch.allclose(out.logits.float(), fp32.logits, atol=0.1)
    assert (out.logits.float() - fp32.logits).abs().max() > 0  # it really ran in bf16


def test_decoding_uses_the_annotation_vector_at_the_argmax(tiny_config, word_map):
    """Greedy decoding of the hard model equals a soft model whose context is replaced by the argmax vector."""
    captioner = hard_captioner(tiny_config, word_map).eval()
    features = torch.randn(2, 196, 1280)  # (N, 196, C)
    decoder = captioner.decoder
    with torch.no_grad():
        state = decoder.start(features)
        words = torch.full((2,), word_map["<start>"])  # (N,)
        logits, alpha, _ = decoder.step(words, state)  # (N, V), (N, 196)
        att2, gate = state.weights.project_hidden(state.hidden)  # (N, A), (N, C)
        context = features[torch.arange(2), alpha.argmax(dim=1)]  # (N, C)
        from captioning.decoder import lstm_cell

        word_gates = state.weights.word_gates(decoder.embedding(words))  # (N, 4D)
        hidden, _ = lstm_cell(word_gates, torch.sigmoid(gate) * context, state.hidden, state.cell, state.weights)
        torch.testing.assert_close(logits, decoder.fc(hidden))
