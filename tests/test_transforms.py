"""Per-image crops, flips and colour jitter against the same operations computed another way
(an image at a time, by hand or with ``F.interpolate``), and the per-channel statistics
against ``torch.mean`` and ``torch.std``."""

import doctest
import math
import re
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import fslearn as fsl
from fslearn.sampling import normalize, transforms
from fslearn.sampling.transforms import CROP_TRIES, GREY_WEIGHTS, crop_boxes, resized_crops


def generator(seed=0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_docstring_examples_hold():
    for module in (transforms, normalize):
        assert doctest.testmod(module).failed == 0


@pytest.mark.parametrize("height, width", [(12, 12), (10, 14)])
def test_a_box_of_whole_pixels_is_cut_out_and_resized_as_interpolate_does(height, width):
    x = torch.rand(5, 3, height, width, generator=generator())
    # left, top, width, height: interior, touching each edge, the whole image, one column
    boxes = [[3, 2, 5, 6], [0, 0, 7, 4], [width - 4, height - 5, 4, 5], [0, 0, width, height]]
    boxes = torch.tensor([*boxes, [2, 1, 1, height - 1]], dtype=torch.float32)
    out = resized_crops(x, boxes)
    for image, crop, (left, top, w, h) in zip(x, out, boxes.int().tolist(), strict=True):
        cut = image[None, :, top : top + h, left : left + w]
        expected = F.interpolate(cut, (height, width), mode="bilinear", align_corners=False)
        torch.testing.assert_close(crop, expected[0], atol=1e-5, rtol=0)


def test_random_resized_crop_cuts_the_boxes_crop_boxes_draws():
    x = torch.rand(6, 3, 20, 16, generator=generator(1))
    out = fsl.random_resized_crop(x, generator(7), scale=(0.2, 0.9), ratio=(0.5, 2.0))
    boxes = crop_boxes(6, 20, 16, generator(7), (0.2, 0.9), (0.5, 2.0))
    torch.testing.assert_close(out, resized_crops(x, boxes))


def test_crop_boxes_have_the_drawn_area_and_aspect_and_lie_inside_the_image():
    scale, ratio = (0.35, 1.0), (3 / 4, 4 / 3)
    left, top, w, h = crop_boxes(4000, 84, 60, generator(2), scale, ratio).unbind(1)
    area, aspect = w * h / (84 * 60), w / h
    eps = 1e-4
    assert (area >= scale[0] - eps).all() and (area <= scale[1] + eps).all()
    assert (aspect >= ratio[0] - eps).all() and (aspect <= ratio[1] + eps).all()
    assert (left >= 0).all() and (top >= 0).all()
    assert (left + w <= 60 + eps).all() and (top + h <= 84 + eps).all()
    # each box drawn on its own: areas and aspects all different
    assert len(area.unique()) > 3900 and len(aspect.unique()) > 3900
    # areas spread over the whole range, positions over the whole image
    assert area.min() < 0.37 and area.max() > 0.9
    across, down = left / (60 - w), top / (84 - h)  # 0 … 1: from one side to the other
    across, down = across[w < 59], down[h < 83]
    assert across.min() < 0.01 and across.max() > 0.99 and down.min() < 0.01 and down.max() > 0.99


def test_where_no_box_fits_the_crop_is_the_central_box_of_the_nearest_aspect():
    # an aspect of at least 2 and the whole area: no box fits a square image
    boxes = crop_boxes(3, 40, 40, generator(), scale=(1.0, 1.0), ratio=(2.0, 3.0))
    torch.testing.assert_close(boxes, torch.tensor([[0.0, 10.0, 40.0, 20.0]]).expand(3, 4))
    tall = crop_boxes(2, 40, 10, generator(), scale=(1.0, 1.0), ratio=(0.5, 2.0))
    torch.testing.assert_close(tall, torch.tensor([[0.0, 10.0, 10.0, 20.0]]).expand(2, 4))
    assert CROP_TRIES == 10


def test_flips_are_exact_where_drawn_and_absent_elsewhere():
    x = torch.rand(64, 3, 5, 7, generator=generator())
    out = fsl.random_flip(x, generator(3), p=0.4)
    chosen = torch.rand(64, generator=generator(3)) < 0.4
    assert 0 < chosen.sum() < 64
    assert torch.equal(out[chosen], x[chosen].flip(-1))
    assert torch.equal(out[~chosen], x[~chosen])


@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 1.0])
def test_the_flipped_fraction_is_near_p(p):
    x = torch.arange(2.0)[None, None, None].expand(4000, 1, 1, 2)  # [0, 1] per image
    flipped = fsl.random_flip(x, generator(int(p * 10)), p=p)[:, 0, 0, 0] == 1
    sd = math.sqrt(p * (1 - p) / 4000)
    assert abs(flipped.float().mean().item() - p) <= 4 * sd


def jitter_by_hand(image, b, c, s):
    """torchvision's adjust_brightness, adjust_contrast and adjust_saturation, one image."""
    image = (image * b).clamp(0, 1)
    grey = (
        sum(w * ch for w, ch in zip(GREY_WEIGHTS, image, strict=True))
        if len(image) == 3
        else image[0]
    )
    image = (c * image + (1 - c) * grey.mean()).clamp(0, 1)
    if len(image) == 3:
        grey = sum(w * ch for w, ch in zip(GREY_WEIGHTS, image, strict=True))
        image = (s * image + (1 - s) * grey).clamp(0, 1)
    return image


@pytest.mark.parametrize("channels", [3, 1])
def test_colour_jitter_against_each_image_by_hand(channels):
    x = torch.rand(16, channels, 6, 5, generator=generator())
    out = fsl.color_jitter(x, generator(4), brightness=0.5, contrast=0.3, saturation=0.8)
    g = generator(4)
    # each factor uniform in [1 - a, 1 + a], drawn for the 16 images in turn
    factors = [1 - a + 2 * a * torch.rand(16, generator=g) for a in (0.5, 0.3, 0.8)]
    if channels == 1:  # nothing to saturate: no draw for it
        factors[2] = torch.full((16,), math.nan)
    for image, result, b, c, s in zip(x, out, *factors, strict=True):
        torch.testing.assert_close(result, jitter_by_hand(image, b, c, s), atol=1e-6, rtol=0)
    assert not torch.allclose(out, x)


def test_no_jitter_changes_nothing_and_draws_nothing():
    x, g = torch.rand(4, 3, 5, 5), generator()
    assert torch.equal(fsl.color_jitter(x, g, 0, 0, 0), x)
    assert torch.equal(g.get_state(), generator().get_state())


def test_augment_applies_crop_flip_jitter_and_character_in_that_order():
    x = torch.rand(6, 3, 16, 16, generator=generator())
    out = fsl.Augment(crop=(0.5, 1.0), jitter=0.2, character=1.0)(x, generator(5))
    g = generator(5)
    expected = fsl.random_resized_crop(x, g, scale=(0.5, 1.0))
    expected = fsl.color_jitter(fsl.random_flip(expected, g), g, 0.2, 0.2, 0.2)
    torch.testing.assert_close(out, fsl.random_affine(expected, 1.0, g))
    assert torch.equal(fsl.Augment(crop=None, flip=False, jitter=0)(x, g), x)


def test_the_same_seed_gives_the_same_images_and_another_seed_others():
    x = torch.rand(8, 3, 12, 12, generator=generator())
    augment, before = fsl.Augment(), x.clone()
    assert torch.equal(augment(x, generator(1)), augment(x, generator(1)))
    assert torch.equal(x, before), "the input images changed"
    assert not torch.allclose(augment(x, generator(1)), augment(x, generator(2)))


@pytest.mark.parametrize(
    "transform",
    [
        lambda x, g: fsl.random_resized_crop(x, g),
        lambda x, g: fsl.color_jitter(x, g),
        fsl.Augment(),
    ],
)
def test_copies_of_one_image_in_a_batch_come_out_different(transform):
    image = torch.rand(1, 3, 12, 12, generator=generator())
    out = transform(image.expand(8, 3, 12, 12), generator(3)).flatten(1)
    assert (torch.cdist(out, out) + torch.eye(8) > 1e-3).all(), "two images got the same draw"


def test_flips_differ_within_a_batch():
    out = fsl.random_flip(torch.arange(2.0).expand(32, 1, 1, 2), generator())[:, 0, 0, 0]
    assert 0 < out.sum() < 32


def test_normalize_against_hand_arithmetic_and_in_the_state_dict():
    module = fsl.Normalize([0.5, 0.25, 0.0], [0.5, 0.25, 2.0])
    x = torch.rand(2, 4, 3, 5, 5, generator=generator())
    expected = torch.stack(
        [(x[..., 0, :, :] - 0.5) / 0.5, (x[..., 1, :, :] - 0.25) / 0.25, x[..., 2, :, :] / 2], -3
    )
    torch.testing.assert_close(module(x), expected)
    state = module.state_dict()
    assert state["mean"].tolist() == [0.5, 0.25, 0.0] and state["std"].tolist() == [0.5, 0.25, 2]
    loaded = fsl.Normalize([0.0] * 3, [1.0] * 3)
    loaded.load_state_dict(state)
    torch.testing.assert_close(loaded(x), expected)


def test_channel_stats_against_torch_mean_and_std():
    x = (
        torch.rand(10, 3, 4, 5, generator=generator())
        * torch.tensor([1.0, 0.5, 0.1])[:, None, None]
    )
    mean, std = fsl.channel_stats(x, chunk=3)
    torch.testing.assert_close(mean, x.mean((0, 2, 3)))
    torch.testing.assert_close(std, x.std((0, 2, 3)))
    images = torch.randint(0, 256, (7, 3, 4, 4), dtype=torch.uint8, generator=generator())
    dataset = SimpleNamespace(flat_images=images)  # what a FewShotDataset gives
    mean, std = fsl.channel_stats(dataset, chunk=2)
    torch.testing.assert_close(mean, fsl.to_float(images).mean((0, 2, 3)))
    torch.testing.assert_close(std, fsl.to_float(images).std((0, 2, 3)))


def test_channel_stats_of_a_seeded_sample():
    x = torch.rand(50, 2, 3, 3, generator=generator())
    picked = torch.randperm(50, generator=generator(9))[:12]
    mean, std = fsl.channel_stats(x, max_images=12, seed=9, chunk=5)
    torch.testing.assert_close(mean, x[picked].mean((0, 2, 3)))
    torch.testing.assert_close(std, x[picked].std((0, 2, 3)))
    assert not torch.allclose(mean, fsl.channel_stats(x, max_images=12, seed=10)[0])


def test_channel_stats_of_a_bright_set_keep_their_precision():
    x = 0.999 + 1e-6 * torch.rand(200, 1, 8, 8, generator=generator(), dtype=torch.float64)
    _, std = fsl.channel_stats(x, chunk=7)
    torch.testing.assert_close(std.double(), x.std((0, 2, 3)), rtol=1e-5, atol=0)


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda x, g: fsl.random_resized_crop(x, g, scale=(0, 1)),
            "scale must be a range of area fractions (low, high) with 0 < low ≤ high ≤ 1 (1: the "
            "whole image); got (0, 1)",
        ),
        (
            lambda x, g: fsl.random_resized_crop(x, g, scale=(0.5, 1.5)),
            "scale must be a range of area fractions",
        ),
        (lambda x, g: fsl.random_resized_crop(x, g, scale=0.5), "got 0.5"),
        (
            lambda x, g: fsl.random_resized_crop(x, g, ratio=(0, 1)),
            "ratio must be a range of aspects, width / height, (low, high) with 0 < low ≤ high; "
            "got (0, 1)",
        ),
        (lambda x, g: fsl.random_resized_crop(x, g, ratio=(2, 1)), "ratio must be"),
        (lambda x, g: fsl.random_flip(x, g, p=1.5), "p must be a probability from 0 to 1; got 1.5"),
        (
            lambda x, g: fsl.color_jitter(x, g, brightness=-0.1),
            "brightness must be a number ≥ 0 (0: leave it unchanged; 0.4 draws factors from 0.6 "
            "to 1.4); got -0.1",
        ),
        (
            lambda x, g: fsl.color_jitter(x, g, saturation=math.nan),
            "saturation must be a number ≥ 0",
        ),
        (
            lambda x, g: fsl.color_jitter(x[:, :2], g),
            "contrast and saturation take grey (C=1) or RGB (C=3) images; got C=2 (set both to 0 "
            "to change the brightness alone)",
        ),
        (
            lambda x, g: fsl.random_flip((x * 255).byte(), g),
            "x must be a float tensor of images (B, C, H, W) (convert uint8 images with "
            "fsl.to_float); got (2, 3, 8, 8) torch.uint8",
        ),
        (lambda x, g: fsl.Augment()(x[0], g), "got (3, 8, 8) torch.float32"),
        (
            lambda x, g: fsl.Augment(crop=(0.5, 2)),
            "crop must be a range of area fractions (low, high) with 0 < low ≤ high ≤ 1 (1: the "
            "whole image), or None; got (0.5, 2)",
        ),
        (lambda x, g: fsl.Augment(jitter=-1), "jitter must be a number ≥ 0"),
        (lambda x, g: fsl.Augment(flip=0.5), "flip must be True or False; got 0.5"),
        (lambda x, g: fsl.Augment(character=3), "character must be a number from 0 to 2.5"),
        (
            lambda x, g: fsl.Normalize([0.5, 0.5], [0.2]),
            "mean and std must give one number per channel each, as many of both; got 2 means and "
            "1 stds",
        ),
        (
            lambda x, g: fsl.Normalize([0.5], [0.0]),
            "every mean must be finite and every std a finite number > 0 (a channel with std 0 is "
            "constant: leave it out or use std 1); got mean=[0.5], std=[0.0]",
        ),
        (lambda x, g: fsl.Normalize([0.5], [-1]), "std=[-1.0]"),
        (
            lambda x, g: fsl.Normalize("abc", [1]),
            "mean and std must be sequences of numbers, one per channel",
        ),
        (
            lambda x, g: fsl.Normalize([0.5], [0.2])(x),
            "Normalize holds statistics for 1 channel(s); got images of shape (2, 3, 8, 8) "
            "(expected (..., 1, H, W))",
        ),
        (
            lambda x, g: fsl.channel_stats(x, max_images=0),
            "max_images must be a positive integer; got 0",
        ),
        (
            lambda x, g: fsl.channel_stats([1, 2]),
            "channel_stats takes a FewShotDataset or an image tensor (n_images, C, H, W) of 2 "
            "pixels or more; got list",
        ),
        (lambda x, g: fsl.channel_stats(x[0]), "got Tensor of shape (3, 8, 8)"),
    ],
)
def test_bad_arguments_are_refused_with_the_value_and_the_fix(call, message):
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match=re.escape(message)):
        call(x, generator())
