"""What the chapters lean on to keep prose and outputs together: glue and separation."""

import itertools

import nbformat
import numpy as np
import pytest
import torch

import fslearn as fsl


def test_glue_records_the_number_myst_nb_reads():
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output
    from myst_nb.ext.glue import extract_glue_data_cell

    InteractiveShell.instance()
    with capture_output() as captured:
        returned = fsl.glue("ratio", torch.tensor(31.75))
        fsl.glue("count", np.int64(7))
    assert torch.equal(returned, torch.tensor(31.75))  # handed back unchanged
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
    assert fsl.glue("x", 1.5) == 1.5
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
