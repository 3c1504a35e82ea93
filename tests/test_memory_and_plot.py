import matplotlib
import pytest
import torch
from torch import nn

import fslearn as fsl

matplotlib.use("Agg")


def test_activation_bytes_oracle_for_one_linear_layer():
    # A linear layer saves only its input for the weight gradient.
    layer = nn.Linear(10, 7)
    assert fsl.activation_bytes(layer, torch.zeros(5, 10)) == 5 * 10 * 4


def test_activation_bytes_grow_linearly_with_batch():
    net = fsl.Conv4(1, 8)
    one = fsl.activation_bytes(net, torch.zeros(1, 1, 28, 28))
    many = fsl.activation_bytes(net, torch.zeros(32, 1, 28, 28))
    assert one > 0 and many == pytest.approx(32 * one, rel=0.01)


def test_image_grid_places_every_image():
    images = torch.stack([torch.full((1, 3, 2), float(i) / 10) for i in range(5)])
    grid = fsl.image_grid(images, nrow=3, pad=1)
    assert grid.shape == (2 * 4 - 1, 3 * 3 - 1, 1)
    assert grid[0, 0, 0] == 0.0 and grid[4, 3, 0] == pytest.approx(0.4)
    assert fsl.image_grid(torch.zeros(4, 2, 2, dtype=torch.uint8)).shape == (
        2 * 4 - 2,
        2 * 4 - 2,
        1,
    )
    with pytest.raises(ValueError, match="got \\(0, 1, 2, 2\\)"):
        fsl.image_grid(torch.zeros(0, 1, 2, 2))


def test_plots_draw_the_history_data():
    x, y = torch.randn(12, 3), torch.randint(2, (12,))
    h = fsl.fit(nn.Linear(3, 2), x, y, batch_size=4, epochs=2, validation=(x, y), progress=False)
    ax = fsl.plot_history({"a": h}, x="epoch")
    line = ax.get_lines()[0]
    assert list(line.get_xdata()) == h.axis("epoch") and list(line.get_ydata()) == h.loss
    ax = fsl.plot_history(h, x="iteration", smooth=3)
    assert list(ax.get_lines()[0].get_ydata())[2] == pytest.approx(sum(h.loss[:3]) / 3)
    ax = fsl.plot_epochs(h, keys=("train_loss", "val_accuracy"))
    assert [line.get_label() for line in ax.get_lines()] == ["train_loss", "val_accuracy"]
    ax = fsl.show_images(torch.zeros(6, 1, 5, 5, dtype=torch.uint8), title="t")
    assert ax.get_title() == "t" and ax.get_images()[0].get_array().shape == (3 * 7 - 2, 2 * 7 - 2)


def test_pca_projection_oracle_and_plot():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 6, generator=g) * torch.tensor([5.0, 2.0, 0.1, 0.1, 0.1, 0.1])
    points = fsl.project_2d(x)
    centred = x - x.mean(0)
    # The projection keeps the variance of the two leading principal directions.
    top2 = torch.linalg.eigvalsh(centred.T @ centred)[-2:].sum()
    assert points.shape == (50, 2)
    assert points.square().sum() == pytest.approx(top2.item(), rel=1e-4)
    ax, scatter = fsl.plot_embeddings(x, torch.arange(50) % 3, title="pca")
    assert ax.get_title() == "pca" and scatter.get_offsets().shape == (50, 2)
    with pytest.raises(ValueError, match="got 'umap'"):
        fsl.project_2d(x, "umap")


def _sampler(n_way=3, n_shot=2, n_query=4, channels=1):
    images = torch.randint(
        0,
        256,
        (6, 8, channels, 5, 5),
        dtype=torch.uint8,
        generator=torch.Generator().manual_seed(0),
    )
    return fsl.EpisodeSampler(
        fsl.FewShotDataset(images, [f"c{i}" for i in range(6)], ["g"] * 6, name="random"),
        n_way,
        n_shot,
        n_query,
        seed=0,
    )


def _shown(ax) -> torch.Tensor:
    return torch.as_tensor(ax.get_images()[0].get_array().data, dtype=torch.float32)


@pytest.mark.parametrize("channels", [1, 3])
def test_plot_episode_shows_each_support_and_query_image_in_its_class_row(channels):
    import matplotlib.pyplot as plt

    episode = _sampler(channels=channels).sample()
    fig = fsl.plot_episode(episode, n_query=3)
    width = 2 + 1 + 3  # shots, a gap, the queries shown
    assert len(fig.axes) == 3 * width
    as_shown = (lambda x: x[0]) if channels == 1 else (lambda x: x.permute(1, 2, 0))
    for row in range(3):
        for shot in range(2):
            expected = as_shown(episode.support_x[row * 2 + shot])
            torch.testing.assert_close(_shown(fig.axes[row * width + shot]), expected)
        assert not fig.axes[row * width + 2].get_images()  # the gap between the two sets
        for q in range(3):
            expected = as_shown(episode.query_x[row * 4 + q])
            torch.testing.assert_close(_shown(fig.axes[row * width + 3 + q]), expected)
    assert "3-way 2-shot" in fig._suptitle.get_text()
    plt.close(fig)


def test_plot_episode_refuses_a_batch_of_tasks():
    with pytest.raises(ValueError, match="holds 4 tasks"):
        fsl.plot_episode(_sampler().sample_tasks(4))
