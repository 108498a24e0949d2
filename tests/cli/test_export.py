"""`src.export` on the shared tiny run's checkpoint: model.onnx (and model.int8.onnx) with their metadata, parity with
PyTorch checked before anything is written, and `src.predict` answering from the file without importing torch."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from src.core.errors import UserError
from src.export import check
from src.mnist.classifier import normalised
from src.mnist.export import parity
from src.mnist.files import read_digits
from src.mnist.predictor import OnnxModel
from src.mnist.record import load_trained
from tests.helpers import REPO, TINY_TEST, assert_one_line_error, run_cli, tiny_digits


def test_the_export_holds_the_net_its_metadata_and_the_parity_it_checked(trained_run: Path, exported: Path) -> None:
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    report = json.loads((exported / "export.json").read_text())
    assert report["fp32"]["top1_agreement"] == 100.0 and report["fp32"]["images"] == TINY_TEST
    assert report["fp32"]["accuracy"] == report["fp32"]["pytorch_accuracy"]
    assert report["fp32"]["max_probability_difference"] < 1e-4
    assert report["fp32"]["accuracy"] - report["int8"]["accuracy"] <= 1.25
    assert report["int8"]["bytes"] == (exported / "model.int8.onnx").stat().st_size
    meta = {prop.key: prop.value for prop in onnx.load(str(exported / "model.onnx")).metadata_props}
    assert meta["mnist.recipe"] == "record" and json.loads(meta["mnist.test_time_shifts"]) == [
        list(shift) for shift in load_trained(ckpt).model.test_time_shifts
    ]
    assert meta["mnist.test_time_shifts_in_graph"] == "true" and meta["mnist.precision"] == "fp32"
    assert json.loads(meta["mnist.normalisation"]) == {"mean": 0.1307, "std": 0.3081}
    assert json.loads(meta["mnist.classes"]) == [str(digit) for digit in range(10)]
    assert meta["mnist.source_sha256"] == report["ckpt_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert int(meta["mnist.params"]) == report["params"]
    # the exporter's node notes (stack traces naming this machine's paths) are stripped
    assert all(not node.metadata_props for node in onnx.load(str(exported / "model.onnx")).graph.node)


def test_the_file_scores_what_the_checkpoint_does_at_any_batch_size(trained_run: Path, exported: Path) -> None:
    """The recipe's test-time shifts are inside the graph, and the batch axis is free."""
    model = load_trained(trained_run / "checkpoints" / "last.ckpt").model
    runtime = OnnxModel((exported / "model.onnx").read_bytes(), "model.onnx")
    images = torch.randn(7, 1, 28, 28)
    with torch.inference_mode():
        expected = model(images).numpy()
    np.testing.assert_allclose(runtime.log_probabilities(images.numpy()), expected, atol=1e-4)
    np.testing.assert_allclose(runtime.log_probabilities(images[:1].numpy()), expected[:1], atol=1e-4)


def test_a_file_that_disagrees_with_pytorch_is_refused_in_one_line(
    trained_run: Path, tiny_mnist: Path, exported: Path
) -> None:
    """What a broken exporter would write: the exported graph with one conv's weights negated, checked as the export
    checks its file (before writing anything) against the checkpoint on the tiny test set."""
    graph = onnx.load(str(exported / "model.onnx"))
    weight = next(tensor for tensor in graph.graph.initializer if len(tensor.dims) == 4)
    weight.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(weight), weight.name))
    images, labels = read_digits(tiny_mnist, train=False)
    batch = normalised(images)
    with torch.inference_mode():
        reference = load_trained(trained_run / "checkpoints" / "last.ckpt").model(batch).exp().numpy()
    report = {"fp32": parity(OnnxModel(graph.SerializeToString(), "model.onnx"), batch.numpy(), reference,
                             labels.numpy())}  # fmt: skip
    with pytest.raises(UserError) as refused:
        check(report, int8_max_loss=0.1)
    message = str(refused.value)
    assert message.startswith("model.onnx disagrees with PyTorch on ") and message.endswith("; nothing written")
    assert f"of {TINY_TEST:,} test images (image " in message and "\n" not in message


@pytest.mark.slow
def test_predict_from_the_file_imports_no_torch_and_reads_the_digits(exported: Path, tmp_path: Path) -> None:
    """A fresh interpreter: the answer, and the modules it imported (no torch, no Lightning, no Hydra)."""
    from PIL import Image  # noqa: PLC0415

    images, labels = tiny_digits(4, seed=1)
    Image.fromarray(255 - images[2]).resize((90, 90)).save(tmp_path / "two.png")
    Image.fromarray(np.full((60, 60), 255, dtype=np.uint8)).save(tmp_path / "blank.png")
    probe = (
        "import runpy, sys\n"
        "model, images = sys.argv[1], sys.argv[2:]\n"
        "for image in images:\n"
        "    sys.argv = ['src.predict', 'onnx=' + model, 'image=' + image]\n"
        "    runpy.run_module('src.predict', run_name='__main__')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'pytorch_lightning', 'hydra', 'torchvision'}))"
    )
    result = subprocess.run([sys.executable, "-c", probe, str(exported / "model.onnx"), str(tmp_path / "two.png"),
                             str(tmp_path / "blank.png")], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{tmp_path / 'two.png'}: {labels[2]} (probability ")
    assert lines[1] == f"{tmp_path / 'blank.png'}: no digit (blank or nearly)"
    assert lines[2] == "[]", "predict from ONNX imported torch, Lightning or Hydra"


def not_a_digit_classifier(path: Path) -> Path:
    """A valid ONNX file of the wrong shape: 3×32×32 in, 10 out (a CIFAR-sized classifier)."""
    given = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])
    answer = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    graph = helper.make_graph([helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=0)], "g", [given],
                              [answer])  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda path: (path.write_text("not a model"), path)[1], "is not an ONNX model onnxruntime can run"),
        (not_a_digit_classifier, "takes tensor(float) of shape ['N', 3, 32, 32]; expected one float input N×1×28×28"),
    ],
)
def test_an_onnx_file_that_is_not_a_digit_classifier_is_one_line(make, message: str, tmp_path: Path) -> None:
    model = make(tmp_path / "model.onnx")
    (tmp_path / "d.png").write_bytes(b"")
    result = run_cli(f"onnx={model}", f"image={tmp_path / 'd.png'}", data_dir=tmp_path, module="src.predict")
    assert_one_line_error(result, f"onnx={model} {message}")
