"""LLaDA-o sequence layout: segment masks against hand-written matrices and the token-by-token
oracle, one RoPE position per image, packing with document masks, bad segments."""

import pytest
import torch

from omnidlm.sequence.masks import segment_mask
from omnidlm.sequence.segments import (TEXT, VAE, VIT, Segment, dense_mask, pack, positions, single, text,
                                       vae_image, vit_image)


def test_mask_matches_hand_written_matrix():
    # causal text | noisy latent (no markers) | full text answer
    segs = [text(2), vae_image(1, noisy=True, markers=False), text(2, mode="full")]
    want = torch.tensor([
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],  # the noise split sees the clean prefix and itself
        [1, 1, 0, 1, 1],  # later splits never see the noise split
        [1, 1, 0, 1, 1],
    ], dtype=torch.bool)
    assert torch.equal(single(segs).mask[0, 0], want)
    assert torch.equal(dense_mask(segs), want)


def test_two_noise_splits_do_not_see_each_other():
    segs = [text(1), vae_image(1, noisy=True, markers=False), vae_image(1, noisy=True, markers=False)]
    want = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 1]], dtype=torch.bool)
    assert torch.equal(single(segs).mask[0, 0], want)


@pytest.mark.parametrize("segs", [
    [text(3), vit_image(4), text(2, "full")],
    [text(2), vae_image(4, noisy=False), text(3), vae_image(4, noisy=True), text(2, "full")],
    [vit_image(4, markers=False), text(1, "full"), vae_image(2, noisy=True), vae_image(2, noisy=True), text(2)],
])
def test_vectorised_mask_equals_oracle(segs):
    assert torch.equal(single(segs).mask[0, 0], dense_mask(segs))


def test_one_rope_position_per_image_markers_included():
    segs = [text(2), vit_image(3), text(1), vae_image(4, noisy=True)]
    assert positions(segs) == [0, 1] + [2] * 5 + [3] + [4] * 6
    lay = single(segs)
    assert lay.kind[0].tolist() == [TEXT] * 2 + [TEXT] + [VIT] * 3 + [TEXT] + [TEXT] + [TEXT] + [VAE] * 4 + [TEXT]
    assert lay.gen_route[0].sum() == 4


def test_packing_documents_and_padding():
    a, b = [text(2), vae_image(1, noisy=True, markers=False)], [text(2, "full")]
    lay = pack([[a, b], [b]])
    assert lay.shape == (2, 5)
    m = lay.mask[:, 0]
    assert torch.equal(m[0, :3, :3], dense_mask(a)) and torch.equal(m[0, 3:, 3:], dense_mask(b))
    assert not m[0, :3, 3:].any() and not m[0, 3:, :3].any()  # documents never see each other
    assert lay.position_ids[0].tolist() == [0, 1, 2, 0, 1]  # positions restart per document
    # padding of row 1 sees only padding; real tokens never see it
    assert not m[1, :2, 2:].any() and m[1, 2:, 2:].all() and not m[1, 2:, :2].any()
    assert torch.equal(segment_mask(lay.split_ids, lay.split_modes, lay.doc_ids), lay.mask)


def test_bad_segments_are_named():
    with pytest.raises(ValueError, match="mode"):
        Segment("text", 2, "sideways")
    with pytest.raises(ValueError, match="kind"):
        Segment("audio", 2)
    with pytest.raises(ValueError, match="length"):
        text(0)
    with pytest.raises(ValueError, match="pad_to"):
        pack([[[text(3)]]], pad_to=2)
