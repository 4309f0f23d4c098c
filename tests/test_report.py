"""The HTML methods/QC report: self-contained, with the figures, the settings and an evaluation."""

import base64
import html.parser
import io

import numpy as np
import pytest
from conftest import TINY, tiny_train

from napari_unet.cli import main
from napari_unet.core.report import methods_paragraph, write_report
from napari_unet.core.synthetic import make_nuclei, scribbles
from napari_unet.core.training import train_blocking

pytest.importorskip("matplotlib", reason="the report needs matplotlib (export extra)")


class _Collect(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.h2, self._in_h2, self.external = [], [], False, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a["src"])
        if tag in ("link", "script") or (tag == "img" and not a["src"].startswith("data:")):
            self.external.append(tag)
        self._in_h2 = tag == "h2"

    def handle_data(self, data):
        if self._in_h2:
            self.h2.append(data)
            self._in_h2 = False


@pytest.fixture(scope="module")
def model():
    syn = make_nuclei((64, 64), seed=1, radius=6, snr=20)
    ann = scribbles(syn.semantic, seed=2, width=2)
    first = train_blocking(syn.image, ann, model_config=TINY, train_config=tiny_train(steps=10, seed=3)).model
    return train_blocking(syn.image, ann, init=first, train_config=tiny_train(steps=6)).model


def _parse(path):
    p = _Collect()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def test_report_is_self_contained_with_figures(model, tmp_path):
    from PIL import Image

    syn = make_nuclei((64, 64), seed=9, radius=6, snr=20)
    path = write_report(model, tmp_path / "r.html", image=syn.image, truth=syn.semantic,
                        rounds=[{"image": "img", "dice": 0.75}])
    p = _parse(path)
    assert not p.external  # no stylesheet, script or image from outside the file
    assert len(p.imgs) == 3  # annotations, training curves, prediction vs truth
    for src in p.imgs:
        assert src.startswith("data:image/png;base64,")
        im = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert im.size[0] > 300 and im.size[1] > 150
    assert {"Methods", "Model", "Data and annotations", "Training", "Settings", "Software and device",
            "Prediction and evaluation"} <= set(p.h2)
    text = path.read_text()
    for key in ("IoU", "Dice", "Pixel accuracy", "0.750", "lr", "weight_decay", "torch", "held-out Dice"):
        assert key in text, key
    assert text.count("<tr><td>1</td>") >= 2 and "<tr><td>2</td>" in text  # two training rounds listed


def test_methods_paragraph_states_the_facts(model):
    text = methods_paragraph(model)
    last = model.history[-1]
    assert "2D U-Net" in text and "2 down-sampling levels" in text and "4 channels" in text
    assert f"learning rate {last['settings']['lr']}" in text and "2 training round(s) took 16 steps" in text
    assert f"{last['data'][0]['labels']['annotated']:,} annotated pixels" in text
    assert "Random seed 0" in text


def test_report_cli(model, tmp_path, capsys):
    model.save(tmp_path / "m")
    syn = make_nuclei((48, 48), seed=2)
    np.save(tmp_path / "img.npy", syn.image)
    np.save(tmp_path / "gt.npy", syn.semantic)
    assert main(["report", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "r.html"), "--image",
                 str(tmp_path / "img.npy"), "--truth", str(tmp_path / "gt.npy"), "--device", "cpu"]) == 0
    assert len(_parse(tmp_path / "r.html").imgs) == 3
    assert main(["report", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "r.pdf")]) == 2
    assert main(["report", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "r2.html"), "--truth",
                 str(tmp_path / "gt.npy")]) == 2
    assert "--truth needs --image" in capsys.readouterr().err
