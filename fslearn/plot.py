"""Plots of training histories, image grids, embeddings and episodes (matplotlib is imported on
first use)."""

from __future__ import annotations

import torch

from .training.batches import History

_X_LABELS = {
    "iteration": "iteration",
    "step": "step",
    "episode": "episodes",
    "epoch": "epoch",
    "time": "wall time (s)",
    "samples": "samples seen",
}


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6, 3.5))
    return ax


def _smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average, so noisy per-iteration losses stay readable."""
    if window <= 1:
        return values
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_history(histories, x: str = "iteration", *, ax=None, smooth: int = 1, log_y: bool = False):
    """Per-iteration training loss against iterations, epochs, wall time or samples seen.

    Args:
        histories: one :class:`~fslearn.History` or :class:`~fslearn.StepHistory`,
            or a ``{label: history}`` dict.
        x: ``"iteration"``, ``"epoch"``, ``"time"`` or ``"samples"``
            (a ``StepHistory`` also takes ``"step"`` and ``"episode"``).
        smooth: moving-average window, in iterations.
        log_y: logarithmic loss axis.

    Returns:
        The matplotlib ``Axes``.
    """
    ax = _axes(ax)
    if not isinstance(histories, dict):
        histories = {None: histories}
    for label, history in histories.items():
        ax.plot(history.axis(x), _smooth(history.loss, smooth), label=label, linewidth=1.2)
    ax.set_xlabel(_X_LABELS[x])
    ax.set_ylabel("training loss")
    if log_y:
        ax.set_yscale("log")
    if any(label is not None for label in histories):
        ax.legend()
    return ax


def plot_epochs(
    history: History, keys=("train_loss", "val_loss"), *, ax=None, label_prefix: str = ""
):
    """Per-epoch records (e.g. training vs validation loss) against the epoch number."""
    ax = _axes(ax)
    epochs = history.epoch_values("epoch")
    for key in keys:
        ax.plot(
            epochs,
            history.epoch_values(key),
            marker="o",
            markersize=3,
            label=f"{label_prefix}{key}",
        )
    ax.set_xlabel("epoch")
    ax.legend()
    return ax


def image_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 2) -> torch.Tensor:
    """Tile images into one picture.

    Args:
        images: shape ``(N, C, H, W)`` or ``(N, H, W)``, uint8 or float in ``[0, 1]``.
        nrow: images per row (default: about square).
        pad: pixels of background between images.

    Returns:
        A float tensor of shape ``(rows·(H+pad)-pad, nrow·(W+pad)-pad, C)``.
    """
    images = images.detach().cpu()
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4 or len(images) == 0:
        raise ValueError(
            "images must have shape (N, C, H, W) or (N, H, W) with N ≥ 1; "
            f"got {tuple(images.shape)}"
        )
    images = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    n, c, h, w = images.shape
    nrow = nrow or max(1, round(n**0.5))
    rows = -(-n // nrow)
    grid = torch.zeros(rows * (h + pad) - pad, nrow * (w + pad) - pad, c)
    for i, image in enumerate(images):
        r, col = divmod(i, nrow)
        grid[r * (h + pad) : r * (h + pad) + h, col * (w + pad) : col * (w + pad) + w] = (
            image.permute(1, 2, 0)
        )
    return grid


def show_images(
    images: torch.Tensor,
    nrow: int | None = None,
    *,
    ax=None,
    title: str | None = None,
    ink: bool = True,
):
    """Show a batch of images as a grid; ``ink=True`` draws ink (high values) dark on white."""
    grid = image_grid(images, nrow).numpy()
    ax = _axes(ax)
    if grid.shape[-1] == 1:
        ax.imshow(grid[..., 0], cmap="gray_r" if ink else "gray", vmin=0, vmax=1)
    else:
        ax.imshow(grid.clip(0, 1))
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def project_2d(embeddings: torch.Tensor, method: str = "pca", seed: int = 0) -> torch.Tensor:
    """Embeddings ``(n, D)`` → 2-D points ``(n, 2)`` for plotting.

    ``"pca"``: the two leading principal components (an SVD of the centred data).
    ``"tsne"``: scikit-learn's t-SNE, when scikit-learn is installed.
    """
    x = embeddings.detach().float().cpu().flatten(1)
    if method == "pca":
        centred = x - x.mean(0)
        _, _, v = torch.linalg.svd(centred, full_matrices=False)
        return centred @ v[:2].T
    if method == "tsne":
        try:
            from sklearn.manifold import TSNE
        except ImportError as error:
            raise ImportError(
                "method='tsne' needs scikit-learn: pip install scikit-learn"
            ) from error
        perplexity = min(30.0, (len(x) - 1) / 3)
        return torch.from_numpy(
            TSNE(2, perplexity=perplexity, random_state=seed).fit_transform(x.numpy())
        ).float()
    raise ValueError(f"method must be 'pca' or 'tsne'; got {method!r}")


def plot_embeddings(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    *,
    method: str = "pca",
    ax=None,
    title: str | None = None,
    seed: int = 0,
):
    """Scatter embeddings ``(n, D)`` projected to 2-D, coloured by ``labels`` ``(n,)``."""
    points = project_2d(embeddings, method, seed).numpy()
    ax = _axes(ax)
    scatter = ax.scatter(points[:, 0], points[:, 1], c=labels.cpu().numpy(), cmap="tab10", s=12)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(f"{method.upper()} 1")
    ax.set_ylabel(f"{method.upper()} 2")
    if title:
        ax.set_title(title)
    return ax, scatter


def plot_episode(episode, *, n_query: int | None = None, ink: bool = True, class_names=None):
    """Draw one episode: its support set and its query set side by side, one row per class.

    Args:
        episode: an :class:`~fslearn.Episode` of one task: ``support_x`` of shape
            ``(n_way * n_shot, C, H, W)`` and ``query_x`` of shape ``(n_way * n_query, C, H, W)``,
            each grouped by label.
        n_query: the queries to show per class (default: all of them).
        ink: draw ink (high values) dark on white, as for characters.
        class_names: a label for each row (default: ``label <i> (class <dataset class>)``).

    Returns:
        The matplotlib ``Figure``.
    """
    import matplotlib.pyplot as plt

    if episode.support_x.dim() != 4:
        raise ValueError(
            f"plot_episode draws one task; this episode holds {episode.support_x.shape[0]} tasks"
            " stacked (support_x of shape "
            f"{tuple(episode.support_x.shape)}): pass one of them, e.g. Episode(*(t[0] for t in"
            " (e.support_x, e.support_y, e.query_x, e.query_y, e.classes)))"
        )
    n_way, n_shot = episode.n_way, episode.n_shot
    shown = episode.n_query if n_query is None else min(n_query, episode.n_query)
    names = class_names or [f"label {i} (class {int(c)})" for i, c in enumerate(episode.classes)]
    support = episode.support_x.detach().cpu().reshape(n_way, n_shot, *episode.support_x.shape[1:])
    query = (
        episode.query_x.detach().cpu().reshape(n_way, episode.n_query, *episode.query_x.shape[1:])
    )
    width = n_shot + shown + 1
    label_inches = 0.075 * max(len(name) for name in names)
    fig, axes = plt.subplots(
        n_way,
        width,
        figsize=(0.62 * (width - 0.6) + label_inches + 0.3, 0.62 * n_way + 0.7),
        squeeze=False,
        gridspec_kw={"width_ratios": [1] * n_shot + [0.4] + [1] * shown, "hspace": 0.12},
    )
    for row in range(n_way):
        for col in range(width):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col == n_shot:
                ax.set_axis_off()
                continue
            image = support[row, col] if col < n_shot else query[row, col - n_shot - 1]
            _show(ax, image, ink)
            for spine in ax.spines.values():
                spine.set_edgecolor("tab:blue" if col < n_shot else "tab:orange")
                spine.set_linewidth(2)
        axes[row, 0].set_ylabel(names[row], rotation=0, ha="right", va="center", fontsize=9)
    fig.subplots_adjust(
        left=(label_inches + 0.15) / fig.get_figwidth(),
        right=0.98,
        bottom=0.03,
        top=1 - 0.55 / fig.get_figheight(),
    )
    top = axes[0, 0].get_position().y1
    # Right-aligned over the support set: a 1-shot title runs left over the row labels'
    # margin, not right into the query set's.
    fig.text(
        axes[0, n_shot - 1].get_position().x1,
        top + 0.01,
        f"support ({n_shot}-shot)",
        color="tab:blue",
        fontsize=10,
        va="bottom",
        ha="right",
    )
    fig.text(
        axes[0, n_shot + 1].get_position().x0,
        top + 0.01,
        f"query ({shown} of {episode.n_query} per class)",
        color="tab:orange",
        fontsize=10,
        va="bottom",
    )
    fig.suptitle(f"one {n_way}-way {n_shot}-shot episode", fontsize=11, y=0.995)
    return fig


def _show(ax, image: torch.Tensor, ink: bool) -> None:
    """One ``(C, H, W)`` image on ``ax``: grey (ink dark on white when ``ink``) or colour."""
    if image.dtype == torch.uint8:
        image = image.float() / 255
    if image.shape[0] == 1:
        ax.imshow(image[0], cmap="gray_r" if ink else "gray", vmin=0, vmax=1)
    else:
        ax.imshow(image.permute(1, 2, 0).clamp(0, 1))
