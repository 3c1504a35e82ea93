"""Random affine distortions: where the ink goes, against the map worked out by hand, and the
range of strengths in which characters stay characters, refused outside it wherever it enters."""

import math
import re

import numpy as np
import pytest
import torch

import fslearn as fsl
from fslearn.cli.arguments import parser
from fslearn.sampling.augment import AFFINE_RANGES, MAX_STRENGTH, STRENGTH_RANGE, check_strength

from synthetic import labelled_dataset


def blob(size=29, at=(9, 18)) -> torch.Tensor:
    """A 3×3 square of ink centred on pixel ``at`` (row, column), on background 0."""
    x = torch.zeros(1, 1, size, size)
    x[0, 0, at[0] - 1 : at[0] + 2, at[1] - 1 : at[1] + 2] = 1.0
    return x


def centre(x: torch.Tensor) -> torch.Tensor:
    """The ink's centre of mass, (column, row), in affine_grid's coordinates (-1 … 1)."""
    size = x.shape[-1]
    axis = (2 * torch.arange(size) + 1) / size - 1  # pixel centres, align_corners=False
    weights = x[0, 0] / x.sum()
    return torch.stack([(weights.sum(0) * axis).sum(), (weights.sum(1) * axis).sum()])


def test_the_ink_goes_where_the_map_sends_it():
    x = blob()
    warped = fsl.random_affine(x, 1.0, torch.Generator().manual_seed(5))
    # The same draws, in the same order: rotation, shear, scale, shift in x and in y.
    g = torch.Generator().manual_seed(5)
    amount = {
        k: (2 * torch.rand(1, generator=g).item() - 1) * AFFINE_RANGES[r]
        for k, r in [
            ("a", "rotation"),
            ("h", "shear"),
            ("s", "scale"),
            ("tx", "shift"),
            ("ty", "shift"),
        ]
    }
    angle, scale = amount["a"] * math.pi / 180, 1 + amount["s"]
    linear = (
        torch.tensor(
            [[math.cos(angle), -math.sin(angle) + amount["h"]], [math.sin(angle), math.cos(angle)]]
        )
        / scale
    )
    # Output p samples the input at linear·p + t, so ink at q shows at linear⁻¹(q − t).
    expected = torch.linalg.solve(linear, centre(x) - torch.tensor([amount["tx"], amount["ty"]]))
    torch.testing.assert_close(centre(warped), expected, atol=0.02, rtol=0)  # < 1/3 pixel
    assert not torch.allclose(centre(warped), centre(x), atol=0.05), "the blob moved"
    area = x.sum().item() / torch.linalg.det(linear).item()  # output area per input area
    assert warped.sum().item() == pytest.approx(area, rel=0.05)


def test_no_strength_is_no_change_and_every_image_gets_its_own_map():
    x = blob().expand(4, 1, 29, 29)
    assert fsl.random_affine(x, 0.0, torch.Generator()) is x
    warped = fsl.random_affine(x, 1.0, torch.Generator().manual_seed(0))
    assert len({tuple(centre(w[None]).tolist()) for w in warped}) == 4
    with pytest.raises(ValueError, match=r"strength must be a number from 0 to 2.5 .*; got -1"):
        fsl.random_affine(x, -1.0, torch.Generator())


def test_an_augmenting_sampler_resumes_and_leaves_the_plain_stream_alone():
    dataset = labelled_dataset(n_classes=12, size=16)
    plain = fsl.EpisodeSampler(dataset, 3, 1, 2, seed=4)
    augmenting = fsl.EpisodeSampler(dataset, 3, 1, 2, seed=4, augment=0.5)
    first = augmenting.sample_tasks(2)
    assert torch.equal(first.classes, plain.sample_tasks(2).classes)  # the same draw, then warped
    assert not torch.equal(
        first.support_x, fsl.EpisodeSampler(dataset, 3, 1, 2, seed=4).sample_tasks(2).support_x
    )
    state = augmenting.state_dict()
    again = augmenting.sample_tasks(2)
    resumed = fsl.EpisodeSampler(dataset, 3, 1, 2, seed=0, augment=0.5)
    resumed.load_state_dict(state)
    assert torch.equal(resumed.sample_tasks(2).query_x, again.query_x)
    with pytest.raises(ValueError, match="augment must be a number from 0 to 2.5"):
        fsl.EpisodeSampler(dataset, 3, 1, 2, augment=-0.1)


def _visible_ink(x: torch.Tensor, strength: float, seed: int) -> torch.Tensor:
    """The fraction of each image's ink that ``random_affine`` keeps inside the frame, its
    change of area undone: the same draws, in the same order, give each map's determinant."""
    warped = fsl.random_affine(x, strength, torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed)
    rotation, shear, scale = (
        (2 * torch.rand(len(x), generator=g) - 1) * strength * AFFINE_RANGES[name]
        for name in ("rotation", "shear", "scale")
    )
    angle = rotation * math.pi / 180
    # det of [[cos, -sin + shear], [sin, cos]] / scale: output area per input area, inverted
    det = (torch.cos(angle) ** 2 + torch.sin(angle) * (torch.sin(angle) - shear)) / (1 + scale) ** 2
    return warped.sum((1, 2, 3)) * det.abs() / x.sum((1, 2, 3))


def test_the_largest_strength_keeps_characters_characters():
    # The measurement behind MAX_STRENGTH, on 1 000 images of the embedded set.
    dataset = fsl.load_embedded("background", progress=False)
    classes = torch.randperm(dataset.n_classes, generator=torch.Generator().manual_seed(0))
    x = fsl.to_float(dataset.images[classes[:50]].flatten(0, 1))
    kept = _visible_ink(x, MAX_STRENGTH, seed=1)
    assert (kept >= 0.5).float().mean() >= 0.99
    assert (fsl.random_affine(x, MAX_STRENGTH, torch.Generator()).amax((1, 2, 3)) > 0.5).all()
    # Strengths accepted before there was a bound, which left most characters blank.
    for strength in (20.0, 100.0):
        with pytest.raises(ValueError, match=f"got {strength}"):
            fsl.random_affine(x, strength, torch.Generator())


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, -math.inf, -0.5, 2.51, 100, 1e6, True, "1", torch.tensor([1.0, 2.0])],
)
def test_every_place_the_strength_enters_refuses_what_is_outside_its_range(value):
    dataset = labelled_dataset(n_classes=6, size=8)
    backbone = fsl.Conv4(1, 4, seed=0)
    message = "must be a number from 0 to 2.5 (0: no distortion; stronger distortions push"
    places = [
        lambda: fsl.random_affine(torch.zeros(2, 1, 8, 8), value, torch.Generator()),
        lambda: fsl.EpisodeSampler(dataset, 3, 1, 2, augment=value),
        lambda: fsl.AveragedViews(backbone, 2, strength=value),
        lambda: fsl.with_test_views(fsl.ProtoNet(backbone), 2, strength=value),
        lambda: fsl.train_protonet(dataset, n_way=3, n_shot=1, n_query=2, augment=value),
    ]
    for place in places:
        with pytest.raises(ValueError, match=re.escape(message)):
            place()


def test_the_strengths_in_the_range_are_taken_as_floats():
    assert check_strength(0) == 0.0 and check_strength(MAX_STRENGTH) == MAX_STRENGTH
    assert check_strength(np.float32(1.5)) == 1.5 and check_strength(torch.tensor(2)) == 2.0
    assert fsl.EpisodeSampler(labelled_dataset(), 3, 1, 2, augment=np.float64(1)).augment == 1.0


@pytest.mark.parametrize("text", ["100", "1e6", "inf", "nan", "-1", "2.6", "lots"])
def test_the_command_line_refuses_the_same_strengths(text, capsys):
    with pytest.raises(SystemExit) as stopped:
        parser().parse_args(["train", "protonet", "--augment", text])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == (
        f"fslearn train: error: argument --augment: must be {STRENGTH_RANGE}; got {text!r}; see "
        "`fslearn train --help`\n"
    )
    assert parser().parse_args(["train", "protonet", "--augment", "2.5"]).augment == 2.5
