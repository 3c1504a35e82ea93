import pytest
import torch

import fslearn as fsl


def _dataset(n_classes=4, n_per_class=3):
    images = torch.arange(n_classes * n_per_class * 4, dtype=torch.uint8).view(
        n_classes, n_per_class, 1, 2, 2
    )
    return fsl.FewShotDataset(
        images,
        [f"g{i % 2}/c{i}" for i in range(n_classes)],
        [f"g{i % 2}" for i in range(n_classes)],
        "toy",
    )


def test_shape_properties_and_repr():
    ds = _dataset()
    assert (ds.n_classes, ds.n_per_class, ds.image_shape, len(ds)) == (4, 3, (1, 2, 2), 12)
    assert "4 classes in 2 groups, 3 images each" in repr(ds)


def test_flat_gives_float_images_and_class_labels():
    ds = _dataset()
    x, y = ds.flat()
    assert x.shape == (12, 1, 2, 2) and x.dtype == torch.float32
    torch.testing.assert_close(x[5], ds.images[1, 2].float() / 255)
    assert y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    raw, _ = ds.flat(float_images=False)
    assert raw.dtype == torch.uint8


def test_select_and_select_groups():
    ds = _dataset()
    sub = ds.select([3, 1])
    assert sub.class_names == ["g1/c3", "g1/c1"] and torch.equal(sub.images[0], ds.images[3])
    odd = ds.select_groups(["g1"])
    assert odd.class_names == ["g1/c1", "g1/c3"]
    with pytest.raises(KeyError, match=r"no group\(s\) \['g7'\]"):
        ds.select_groups(["g7"])


def test_to_device(device):
    assert _dataset().to(device).images.device.type == device.type


@pytest.mark.parametrize(
    "images,names,message",
    [
        (torch.zeros(0, 3, 1, 2, 2, dtype=torch.uint8), [], "empty: 0 classes × 3 images"),
        (torch.zeros(2, 0, 1, 2, 2, dtype=torch.uint8), ["a", "b"], "empty: 2 classes × 0 images"),
        (
            torch.zeros(2, 3, 2, 2, dtype=torch.uint8),
            ["a", "b"],
            r"\(n_images, C, H, W\) with counts= per class; got \(2, 3, 2, 2\)",
        ),
        (torch.zeros(2, 3, 1, 2, 2, dtype=torch.uint8), ["a"], "2 classes but 1 class names"),
    ],
)
def test_bad_datasets_are_rejected(images, names, message):
    with pytest.raises(ValueError, match=message):
        fsl.FewShotDataset(images, names, names)


def test_with_rotations_makes_new_classes():
    ds = _dataset()
    rotated = fsl.with_rotations(ds)
    assert rotated.n_classes == 16 and rotated.class_names[4] == "g0/c0@rot90"
    torch.testing.assert_close(rotated.images[4], torch.rot90(ds.images[0], 1, dims=(-2, -1)))
    torch.testing.assert_close(rotated.images[:4], ds.images)
    with pytest.raises(ValueError, match=r"multiples of 90 degrees; got \[45\]"):
        fsl.with_rotations(ds, angles=(0, 45))
