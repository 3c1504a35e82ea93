"""Random affine distortions: where the ink goes, against the map worked out by hand."""

import math

import pytest
import torch

import fslearn as fsl
from fslearn.sampling.augment import AFFINE_RANGES

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
    with pytest.raises(ValueError, match="strength must be ≥ 0; got -1"):
        fsl.random_affine(x, -1.0, torch.Generator())


def test_an_augmenting_sampler_resumes_and_leaves_the_plain_stream_alone():
    dataset = labelled_dataset(n_classes=12, size=16)
    plain = fsl.EpisodeSampler(dataset, 3, 1, 2, seed=4)
    augmenting = fsl.EpisodeSampler(dataset, 3, 1, 2, seed=4, augment=0.5)
    first = augmenting.sample(2)
    assert torch.equal(first.classes, plain.sample(2).classes)  # the same draw, then warped
    assert not torch.equal(
        first.support_x, fsl.EpisodeSampler(dataset, 3, 1, 2, seed=4).sample(2).support_x
    )
    state = augmenting.state_dict()
    again = augmenting.sample(2)
    resumed = fsl.EpisodeSampler(dataset, 3, 1, 2, seed=0, augment=0.5)
    resumed.load_state_dict(state)
    assert torch.equal(resumed.sample(2).query_x, again.query_x)
    with pytest.raises(ValueError, match="augment must be ≥ 0"):
        fsl.EpisodeSampler(dataset, 3, 1, 2, augment=-0.1)
