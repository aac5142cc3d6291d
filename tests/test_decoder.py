"""Attention and decoder: alpha/context, one image projection per forward, init, teacher forcing == step by step,
masks and padding, the loss (cross-entropy + doubly stochastic penalty), embeddings, bf16 autocast."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from captioning.attention import Attention, RowLayout, additive_scores, context_by_image
from captioning.config import DecoderConfig
from captioning.decoder import Decoder, DecoderOutput
from captioning.loss import caption_loss

V, C, START, END = 20, 24, 17, 18  # ids 1..16 are words, 0 is <pad>


def make_decoder(seed: int = 0, dropout: float = 0.5) -> Decoder:
    torch.manual_seed(seed)
    return Decoder(V, C, DecoderConfig(embed_dim=12, attention_dim=10, decoder_dim=14, dropout=dropout))


def make_batch(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """captions (B, T) = <start> words <end> <pad>...; lengths include <start> and <end>."""
    generator = torch.Generator().manual_seed(seed)
    total = max(lengths) + 2
    captions = torch.zeros(len(lengths), total, dtype=torch.long)
    for b, n in enumerate(lengths):
        captions[b, 0] = START
        captions[b, 1 : n - 1] = torch.randint(1, 17, (n - 2,), generator=generator)
        captions[b, n - 1] = END
    return captions, torch.tensor(lengths)


def features(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 196, C, generator=torch.Generator().manual_seed(seed))


def test_attention_alpha_sums_to_one_and_context_is_the_weighted_sum():
    torch.manual_seed(0)
    attention = Attention(encoder_dim=C, decoder_dim=14, attention_dim=10)
    feats, hidden = features(3), torch.randn(3, 14)
    context, alpha = attention(feats, attention.project_image(feats), hidden)
    assert alpha.shape == (3, 196) and context.shape == (3, C)
    assert (alpha >= 0).all()
    assert torch.allclose(alpha.sum(dim=1), torch.ones(3), atol=1e-6)
    expected = torch.stack([(alpha[b, :, None] * feats[b]).sum(dim=0) for b in range(3)])
    assert torch.allclose(context, expected, atol=1e-5)
    assert alpha.std() > 0  # not a uniform average: the scores depend on the image


def test_rows_sharing_an_image_get_distinct_slots_and_the_per_row_context():
    image = torch.tensor([2, 0, 2, 1, 0, 2])  # (B,) e.g. length-sorted captions of 3 images
    layout = RowLayout.of(image)
    assert layout.slots == 3
    assert sorted(zip(image.tolist(), layout.slot.tolist())) == [(0, 0), (0, 1), (1, 0), (2, 0), (2, 1), (2, 2)]
    feats = features(3)  # (N, 196, C)
    alpha = torch.softmax(torch.randn(6, 196), dim=1).requires_grad_()  # (B, 196)
    grouped = context_by_image(alpha, feats, layout)  # (B, C)
    per_row = torch.bmm(alpha[:, None], feats[image]).squeeze(1)  # (B, C) each row's own copy of its features
    torch.testing.assert_close(grouped, per_row)
    weights = torch.randn_like(per_row)
    (grad_grouped,) = torch.autograd.grad((grouped * weights).sum(), alpha)
    (grad_per_row,) = torch.autograd.grad((per_row * weights).sum(), alpha)
    torch.testing.assert_close(grad_grouped, grad_per_row)
    picked = RowLayout.of(image).select(torch.tensor([0, 0, 2, 3]))  # beams: rows repeated
    assert picked.image.tolist() == [2, 2, 2, 1] and sorted(picked.slot[:3].tolist()) == [0, 1, 2]
    assert RowLayout.of(image).first(2).image.tolist() == [2, 0]


@pytest.mark.parametrize("attention_dim", [10, 2048])  # 2048: one row per cache-sized chunk, so several chunks
def test_chunked_attention_scores_and_gradients_equal_autograd_on_the_plain_formula(attention_dim):
    generator = torch.Generator().manual_seed(3)
    image = torch.tensor([2, 0, 2, 1, 0, 2, 2])  # (B,) rows share images, in no particular order
    projection = torch.randn(3, 196, attention_dim, generator=generator, requires_grad=True)  # (N, 196, A)
    att2 = torch.randn(7, attention_dim, generator=generator, requires_grad=True)  # (B, A)
    weight = torch.randn(attention_dim, generator=generator, requires_grad=True)  # (A,)
    bias = torch.randn(1, generator=generator, requires_grad=True)  # (1,)
    grad_scores = torch.randn(7, 196, generator=generator)  # (B, 196)
    inputs = (projection, att2, weight, bias)
    scores = additive_scores(projection, att2, image, weight, bias)  # (B, 196)
    reference = torch.relu(projection[image] + att2[:, None]) @ weight + bias  # (B, 196)
    torch.testing.assert_close(scores, reference, rtol=1e-5, atol=1e-4)
    grads = torch.autograd.grad(scores, inputs, grad_scores)
    reference_grads = torch.autograd.grad(reference, inputs, grad_scores)
    for name, grad, expected in zip(("projection", "att2", "weight", "bias"), grads, reference_grads):
        torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-3, msg=name)
    assert grads[0].abs().sum() > 0 and grads[1].abs().sum() > 0
    no_rows = additive_scores(projection, att2[:0], image[:0], weight, bias)  # e.g. every beam finished
    assert no_rows.shape == (0, 196)


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


def test_caption_loss_cross_entropy_and_penalty_by_hand():
    decoder = make_decoder().eval()
    lengths_list = [7, 4, 9, 2, 5]
    captions, lengths = make_batch(lengths_list)
    out = decoder(features(5), captions, lengths)
    total, cross_entropy, penalty = caption_loss(out, captions, attention_penalty=1.5)

    logits = torch.cat([out.logits[b, : n - 1] for b, n in enumerate(lengths_list)])
    targets = torch.cat([captions[b, 1:n] for b, n in enumerate(lengths_list)])
    assert torch.allclose(cross_entropy, F.cross_entropy(logits, targets), atol=1e-6)

    by_hand = []
    for b, n in enumerate(lengths_list):
        attention_sum = out.alphas[b, : n - 1].sum(dim=0)  # (196,) over this caption's real steps only
        by_hand.append(((1.0 - attention_sum) ** 2).sum())
    assert torch.allclose(penalty, 1.5 * torch.stack(by_hand).mean(), atol=1e-5)
    assert torch.allclose(total, cross_entropy + penalty)
    assert penalty > 0

    total.backward()
    assert decoder.fc.weight.grad is not None and decoder.attention.encoder_att.weight.grad.abs().sum() > 0


def test_padded_tokens_do_not_change_the_loss():
    decoder = make_decoder().eval()
    lengths_list = [7, 4, 9, 2, 5]
    captions, lengths = make_batch(lengths_list)
    noisy = captions.clone()
    for b, n in enumerate(lengths_list):
        noisy[b, n:] = torch.randint(1, V, (noisy.size(1) - n,), generator=torch.Generator().manual_seed(b))
    assert not torch.equal(noisy, captions)
    feats = features(5)
    with torch.no_grad():
        clean_loss = caption_loss(decoder(feats, captions, lengths), captions, 1.0)
        noisy_loss = caption_loss(decoder(feats, noisy, lengths), noisy, 1.0)
    for a, b in zip(clean_loss, noisy_loss):
        assert torch.allclose(a, b, atol=1e-6)


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
