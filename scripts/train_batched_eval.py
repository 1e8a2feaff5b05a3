"""Train the batched-evaluation case's digit CNN and export it; or time the batch-size sweep.

    python scripts/train_batched_eval.py            # train (~1-1.5 min here, one thread), write the weights
    python scripts/train_batched_eval.py --sweep    # time each evaluation path and batch size

Training is deterministic: fixed seeds for the generated digits, the initial weights and the
shuffling, and one thread (``torch.set_num_threads(1)``, also a good neighbour on a shared
machine). It writes ``src/perfcases/weights/batched_eval_cnn.pt`` (the state dict) and
``batched_eval_cnn.onnx`` (the same model for ONNX Runtime, batch dimension dynamic, weights
inside the file), then checks that both give the same predictions on the held-out set.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm  # type: ignore[import-untyped]

# the suites' package lives in the checkout's src/ (the wheel holds the plugin only)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from perfcases import batched_eval, digits
from perfcases.batched_eval import DigitCNN, to_input

TRAIN_IMAGES = 60_000  # as MNIST's training set
HELD_OUT_IMAGES = 10_000  # as MNIST's test set and the report
EPOCHS = 6
TRAIN_BATCH = 128
LEARNING_RATE = 3e-3
TORCH_SEED = 0


def generate(n: int, seed: int, desc: str) -> digits.DigitSet:
    with tqdm(total=n, desc=desc, leave=False, disable=None) as bar:
        return digits.generate(n, seed, on_progress=bar.update)


def train(train_set: digits.DigitSet, held_out: digits.DigitSet) -> DigitCNN:
    """Adam with a one-cycle schedule; prints the held-out accuracy after each epoch (nothing is
    selected on it: the epochs and rates are fixed)."""
    torch.manual_seed(TORCH_SEED)
    model = DigitCNN()
    images = torch.from_numpy(to_input(train_set.images))
    labels = torch.from_numpy(train_set.labels)
    steps = EPOCHS * -(-len(labels) // TRAIN_BATCH)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LEARNING_RATE, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    shuffle = torch.Generator().manual_seed(TORCH_SEED)
    for epoch in range(EPOCHS):
        model.train()
        order = torch.randperm(len(labels), generator=shuffle)
        for batch in tqdm(order.split(TRAIN_BATCH), desc=f"epoch {epoch + 1}", leave=False, disable=None):
            optimizer.zero_grad()
            loss = loss_fn(model(images[batch]), labels[batch])
            loss.backward()
            optimizer.step()
            schedule.step()
        model.eval()
        accuracy = batched_eval.batched(batched_eval.Classifier(model, None), held_out).accuracy
        print(f"epoch {epoch + 1}: last loss {loss.item():.4f}, held-out accuracy {accuracy:.4f}")
    return model


def export(model: DigitCNN) -> None:
    """Write the state dict and the ONNX model next to each other under src/perfcases/weights/.

    The exporter annotates every ONNX node with the Python stack that produced it (file paths of
    this machine); those annotations are dropped so that the file is the same wherever it is made.
    """
    import onnx

    batched_eval.WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), batched_eval.WEIGHTS)
    example = torch.zeros(2, 1, digits.SIZE, digits.SIZE)
    program = torch.onnx.export(model, (example,), input_names=["image"], output_names=["logits"],
                                dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True)
    assert program is not None  # the dynamo exporter returns the program
    proto = program.model_proto
    for node in proto.graph.node:
        del node.metadata_props[:]
    onnx.save_model(proto, str(batched_eval.ONNX_MODEL))
    for path in (batched_eval.WEIGHTS, batched_eval.ONNX_MODEL):
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


def check_export(held_out: digits.DigitSet) -> None:
    classifier = batched_eval.load_classifier()
    torch_result = batched_eval.batched(classifier, held_out)
    onnx_result = batched_eval.optimized(classifier, held_out)
    agree = (torch_result.predictions == onnx_result.predictions).mean()
    print(f"held-out accuracy: PyTorch {torch_result.accuracy:.4f}, ONNX Runtime {onnx_result.accuracy:.4f}; "
          f"predictions agree on {agree:.2%} of {len(held_out)} images")


def sweep(held_out: digits.DigitSet, sizes: list[int], repeats: int) -> None:
    """Time per image of every path, thread count and batch size, printed as a markdown table.

    The repetitions are interleaved (every cell once, then every cell again, ...) so that a
    neighbour's burst slows all cells alike; a cell shows the best and the median of its timings.
    The one-image-at-a-time loop is timed on a tenth of the images.
    """
    few = held_out[: max(1, len(held_out) // 10)]
    classifiers = {threads: batched_eval.load_classifier(threads=threads) for threads in (1, 2)}
    last = DigitCNN().to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # (stubs lack it)
    last.load_state_dict(classifiers[1].module.state_dict())
    channels_last = batched_eval.Classifier(last.eval(), None)
    paths: dict[str, Callable[[batched_eval.Classifier, int], object]] = {
        "naive: one image at a time": lambda c, b: batched_eval.naive(c, few),
        "dataloader: batches of 64": lambda c, b: batched_eval.dataloader(c, held_out),
        "batched: PyTorch, inference_mode": lambda c, b: batched_eval.batched(c, held_out, b),
        "batched, channels_last": lambda c, b: batched_eval.batched(channels_last, held_out, b),
        "optimized: ONNX Runtime": lambda c, b: batched_eval.optimized(c, held_out, b),
    }
    fixed_batch = {"naive: one image at a time": 1, "dataloader: batches of 64": 64}
    cells = [(name, threads, b) for name in paths for threads in (1, 2)
             for b in ([fixed_batch[name]] if name in fixed_batch else sizes)]
    times: dict[tuple[str, int, int], list[float]] = {cell: [] for cell in cells}
    for _ in tqdm(range(repeats + 1), desc="sweep", disable=None):  # the first pass is a warm-up
        for name, threads, b in cells:
            torch.set_num_threads(threads)
            images = len(few) if name.startswith("naive") else len(held_out)
            start = time.perf_counter()
            paths[name](classifiers[threads], b)
            times[(name, threads, b)].append((time.perf_counter() - start) / images)
    print(f"{len(held_out)} held-out images per call; us per image, best / median of {repeats} interleaved runs\n")
    print(f"| path | threads | {' | '.join(f'batch {b}' for b in sizes)} |")
    print(f"|---|---|{'---|' * len(sizes)}")
    for name in paths:
        for threads in (1, 2):
            if name in fixed_batch:  # one figure, in the first column
                b = fixed_batch[name]
                shown = [f"{_best_and_median(times[(name, threads, b)][1:])} (batch {b})"]
                shown += [""] * (len(sizes) - 1)
            else:
                shown = [_best_and_median(times[(name, threads, b)][1:]) for b in sizes]
            print(f"| {name} | {threads} | {' | '.join(shown)} |")


def _best_and_median(seconds: list[float]) -> str:
    return f"{min(seconds) * 1e6:.1f} / {np.median(seconds) * 1e6:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", action="store_true", help="time the evaluation paths instead of training")
    parser.add_argument("--sizes", default="16,32,64,128,256,512,1024,2000", help="batch sizes for --sweep")
    parser.add_argument("--images", type=int, default=2000, help="held-out images per --sweep call")
    parser.add_argument("--repeats", type=int, default=7, help="timings per cell")
    args = parser.parse_args()
    if args.sweep:
        held_out = digits.generate(args.images, batched_eval.HELD_OUT_SEED)
        sweep(held_out, [int(s) for s in args.sizes.split(",")], args.repeats)
        return
    torch.set_num_threads(1)
    train_set = generate(TRAIN_IMAGES, batched_eval.TRAIN_SEED, "training digits")
    held_out = generate(HELD_OUT_IMAGES, batched_eval.HELD_OUT_SEED, "held-out digits")
    export(train(train_set, held_out))
    check_export(held_out)


if __name__ == "__main__":
    main()
