"""What the chapters lean on to keep prose and outputs together: glue and separation."""

import itertools

import nbformat
import numpy as np
import pytest
import torch

import fslearn as fsl
from fslearn.book import glue


def test_glue_records_the_number_myst_nb_reads():
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output
    from myst_nb.ext.glue import extract_glue_data_cell

    InteractiveShell.instance()
    with capture_output() as captured:
        returned = glue("ratio", torch.tensor(31.75))
        glue("count", np.int64(7))
    assert returned is None  # a cell that ends with glue shows no stray number
    outputs = [
        {"output_type": "display_data", "data": o.data, "metadata": o.metadata}
        for o in captured.outputs
    ]
    glued = dict(extract_glue_data_cell(nbformat.from_dict({"outputs": outputs})))
    assert glued["ratio"]["data"]["text/plain"] == "31.75"  # a Python float, not tensor(31.7500)
    assert glued["count"]["data"]["text/plain"] == "7"


def test_glue_outside_a_notebook_prints_nothing(capsys, monkeypatch):
    import IPython

    monkeypatch.setattr(IPython, "get_ipython", lambda: None)
    assert glue("x", 1.5) is None
    assert capsys.readouterr().out == ""


def test_separation_against_loops():
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(30, 5, generator=generator)
    labels = torch.arange(30) % 3
    means = [embeddings[labels == c].mean(0) for c in range(3)]
    between = np.mean([float((a - b).norm()) for a, b in itertools.combinations(means, 2)])
    within = np.mean([float((e - means[int(y)]).norm()) for e, y in zip(embeddings, labels)])
    assert fsl.separation(embeddings, labels) == pytest.approx(between / within, rel=1e-5)
    assert fsl.separation(4 * embeddings, labels) == pytest.approx(between / within, rel=1e-5)


@pytest.mark.parametrize(
    "labels,match",
    [
        (torch.zeros(6, dtype=torch.long), "C ≥ 2"),
        (torch.tensor([0, 0, 2, 2, 0, 2]), r"\[3, 0, 3\]"),
    ],
)
def test_separation_refuses_missing_classes(labels, match):
    with pytest.raises(ValueError, match=match):
        fsl.separation(torch.randn(6, 2), labels)


def test_setup_chapter_on_a_cpu_uses_one_thread_and_says_so(capsys):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        device, full, short = fsl.setup_chapter()
        assert (device.type, full, short) == ("cpu", False, False)
        assert torch.get_num_threads() == 1
        assert capsys.readouterr().out == "running on cpu: the reduced configuration\n"
        torch.set_num_threads(2)
        fsl.setup_chapter(cpu_threads=None, verbose=False)
        assert torch.get_num_threads() == 2
        assert capsys.readouterr().out == ""
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("check,short", [(None, False), ("short", True), ("full", False)])
def test_setup_chapter_on_a_gpu_runs_the_full_configuration(monkeypatch, capsys, check, short):
    import fslearn.book

    monkeypatch.setattr(fslearn.book, "default_device", lambda: torch.device("cuda"))
    if check is None:
        monkeypatch.delenv("FSLEARN_GPU_CHECK", raising=False)
    else:
        monkeypatch.setenv("FSLEARN_GPU_CHECK", check)
    threads = torch.get_num_threads()
    setup = fsl.setup_chapter()
    assert (setup.device.type, setup.full, setup.short) == ("cuda", True, short)
    assert torch.get_num_threads() == threads  # the CPU's threads are left alone
    assert "the full configuration" in capsys.readouterr().out


def test_progress_bars_are_text_never_a_notebook_widget(monkeypatch):
    # tqdm.auto would pick the widget inside Jupyter; a widget in a chapter's output makes the
    # built page fetch Jupyter's widget scripts from the web.
    import tqdm.notebook

    from fslearn.common import progress_bar

    monkeypatch.setattr("tqdm.autonotebook.tqdm", tqdm.notebook.tqdm, raising=False)
    monkeypatch.setattr("tqdm.auto.tqdm", tqdm.notebook.tqdm, raising=False)
    bar = progress_bar(3, "test", enabled=False)
    assert not isinstance(bar, tqdm.notebook.tqdm)
    bar.close()


def test_seconds_since_setup_counts_from_the_set_up_line():
    import time

    import fslearn.book

    fsl.setup_chapter(cpu_threads=None, verbose=False)
    time.sleep(0.05)
    assert 0.05 <= fslearn.book.seconds_since_setup() < 5
