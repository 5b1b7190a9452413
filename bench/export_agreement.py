"""How closely a run's downloads (cifar/export.py) agree with Keras, and what they cost to make.

Exports a saved model to LiteRT and to ONNX, each in this one process, and runs each in its own
runtime (ai-edge-litert's interpreter, onnxruntime) on the first `--images` test images. Prints
one JSON line per format: the export's seconds, the file's size, the largest absolute difference
of any class probability from Keras's, and how many images get another top class.

    python -m cifar train --preset quick --out /tmp/q --data ~/cifar10/cifar-10-python.tar.gz
    python bench/export_agreement.py --model /tmp/q --data ~/cifar10/cifar-10-python.tar.gz --images 1000
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def litert_probabilities(path: Path, images):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    pixels, output = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(pixels["index"], images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(pixels["index"], images)
    interpreter.invoke()
    return interpreter.get_tensor(output["index"])


def onnx_probabilities(path: Path, images):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a .keras file or a run's folder")
    parser.add_argument("--data", help="cifar-10-python.tar.gz or cifar-10-batches-py (default: CIFAR10_DATA)")
    parser.add_argument("--images", type=int, default=1000)
    args = parser.parse_args()

    import numpy as np

    from cifar.data import load_data
    from cifar.export import export_model
    from cifar.predict import predict_probabilities
    from cifar.store import load_model

    model, _ = load_model(args.model)
    _, (x_test, _), _ = load_data(args.data)
    images = x_test[: args.images]
    reference = predict_probabilities(model, images)
    runtimes = {"litert": (".tflite", litert_probabilities), "onnx": (".onnx", onnx_probabilities)}
    with tempfile.TemporaryDirectory() as folder:
        for name, (ending, run) in runtimes.items():
            path = Path(folder) / f"model{ending}"
            started = time.perf_counter()
            export_model(model, path, name)
            seconds = time.perf_counter() - started
            probabilities = run(path, images)
            print(json.dumps({
                "format": name, "export_seconds": round(seconds, 2), "megabytes": round(path.stat().st_size / 1e6, 2),
                "images": len(images), "max_abs_difference": float(np.abs(probabilities - reference).max()),
                "other_top_class": int((probabilities.argmax(1) != reference.argmax(1)).sum()),
            }), flush=True)


if __name__ == "__main__":
    main()
