"""Stroke widths: random_stroke_width against the dilation and the power written by hand, and
StrokeWidth as a sampler's transform."""

import pytest
import torch
import torch.nn.functional as F

import fslearn as fsl
from fslearn.sampling.transfer import uniform_numbers


def test_each_image_gets_its_own_width_as_the_docstring_says():
    x = torch.rand(12, 1, 9, 9) * (torch.rand(12, 1, 9, 9) > 0.7)
    out = fsl.random_stroke_width(x, 0.8, torch.Generator().manual_seed(3))
    t = (2 * uniform_numbers((12,), torch.Generator().manual_seed(3), "cpu") - 1) * 0.8
    dilated = F.max_pool2d(x, 3, stride=1, padding=1)
    for image, amount, result, grown in zip(x, t.tolist(), out, dilated):
        # thicker: toward the brightest pixel of each 3×3 neighbourhood; thinner: dimmer
        # edges, the same cores
        thicker = image + amount * (grown - image)
        expected = thicker if amount >= 0 else image ** (1 + 2 * -amount)
        assert torch.allclose(result, expected, atol=1e-6)
    assert (t > 0).any() and (t < 0).any()
    assert out.min() >= 0 and out.max() <= 1


def test_strength_zero_is_the_image_and_a_pure_stroke_keeps_its_core():
    x = torch.zeros(2, 1, 7, 7)
    x[:, :, 3, 1:6] = 1.0  # a one-pixel line, fully inked
    generator = torch.Generator().manual_seed(0)
    assert fsl.random_stroke_width(x, 0.0, generator) is x
    out = fsl.random_stroke_width(x, 1.0, generator)
    assert torch.all(out[:, :, 3, 1:6] == 1)  # the core stays, thicker or thinner
    assert out.sum() >= x.sum()  # grown, or as it was: nothing of a full stroke is dimmed


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "1", True])
def test_strength_outside_zero_to_one_is_refused(bad):
    with pytest.raises(ValueError, match="stroke width strength must be a number from 0 to 1"):
        fsl.StrokeWidth(bad)


def test_stroke_width_as_a_transform_draws_on_the_samplers_generator():
    images = (torch.rand(6, 5, 1, 16, 16) * 255).to(torch.uint8)
    dataset = fsl.FewShotDataset(images, [f"c{i}" for i in range(6)], ["g"] * 6, "d")
    plain = fsl.EpisodeSampler(dataset, 3, 1, 2, seed=4)
    strokes = fsl.EpisodeSampler(dataset, 3, 1, 2, seed=4, transform=fsl.StrokeWidth(0.5))
    assert repr(fsl.StrokeWidth(0.5)) == "StrokeWidth(0.5)"
    a, b = plain.sample(), strokes.sample()
    assert torch.equal(a.classes, b.classes)  # the same draw, then the widths
    assert not torch.allclose(a.support_x, b.support_x)
    # From the sampler's generator: the same seed, the same widths.
    again = fsl.EpisodeSampler(dataset, 3, 1, 2, seed=4, transform=fsl.StrokeWidth(0.5))
    assert torch.equal(again.sample().query_x, b.query_x)
