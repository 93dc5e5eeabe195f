"""Speed of FID/KID scoring on a CPU: the TF-FID Inception forward, old path against new, and the
FID they give. Prints one markdown report (`python -m experiments.bench_scoring`).

1. Candidates for the Inception forward on fixed batches (``--n`` random 28 px grey images and
   ``--n`` random 64 px RGB ones, preprocessed to 299 px once): seconds per image of the network
   alone, and the max abs / max relative (to the largest feature) difference of the 2048-d
   features from the TorchScript as shipped. Candidates are timed in turn, ``--repeat`` rounds,
   best round kept. Also the cost of the preprocessing (quantise + TF1 bilinear resize).
2. Batch size of the adopted path (``features.cpu_inference_graph``) on 4·``--n`` images,
   ``--repeat`` rounds of all sizes in turn, best kept.
3. Old against new end to end (``TFInceptionFeatures(fast_cpu=False)`` vs the default), batch by
   batch alternately, on two fixed sets of ``--fid-n`` real MNIST test images (the first and the
   next ``--fid-n``), and the FID and KID between the sets from each path's features, FID by
   both methods of ``distribution_metrics.frechet_distance`` (timed). ``--bf16`` adds a bfloat16
   network.
Ratios are measured side by side in one process: the machine may be shared and noisy.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from collections.abc import Callable
from datetime import date

import torch
from torch import Tensor

from neurosql_pl.datamodules.mnist import load_mnist_split, mnist_raw_dir
from neurosql_pl.distribution_metrics import frechet_distance, kernel_inception_distance
from neurosql_pl.features import TFInceptionFeatures, cpu_inference_graph

Net = Callable[[Tensor], Tensor]


def shipped() -> torch.jit.ScriptModule:
    """A fresh copy of the TF-FID Inception TorchScript as shipped (eval mode, no grad)."""
    return TFInceptionFeatures(fast_cpu=False).net


def channels_last(x: Tensor) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def run(net: Net, x: Tensor, batch_size: int, prepare: Callable[[Tensor], Tensor] = lambda x: x,
        mode: Callable[[], object] = torch.no_grad) -> tuple[float, Tensor]:
    """(seconds, features float32) of ``net`` over x in batches; ``prepare`` is timed too."""
    out = []
    start = time.perf_counter()
    with mode():
        for batch in x.split(batch_size):
            out.append(net(prepare(batch)).float())
    return time.perf_counter() - start, torch.cat(out)


def diff(f: Tensor, ref: Tensor) -> tuple[float, float]:
    d = float((f - ref).abs().max())
    return d, d / float(ref.abs().max())


def candidates() -> dict[str, tuple[Net, Callable[[Tensor], Tensor], Callable[[], object]]]:
    """name → (network, input preparation, grad mode); the first is the reference."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.freeze is deprecated
        ofi = torch.jit.optimize_for_inference(torch.jit.freeze(shipped().eval()))
    cl_weights = shipped().to(memory_format=torch.channels_last)
    bf16 = shipped().to(torch.bfloat16)
    return {
        "TorchScript as shipped, NCHW (old path)": (shipped(), lambda x: x, torch.no_grad),
        "as shipped, torch.inference_mode": (shipped(), lambda x: x, torch.inference_mode),
        "as shipped, channels-last input": (shipped(), channels_last, torch.no_grad),
        "as shipped, channels-last weights + input": (cl_weights, channels_last, torch.no_grad),
        "jit.freeze + optimize_for_inference (MKLDNN), NCHW": (ofi, lambda x: x, torch.no_grad),
        "cpu_inference_graph, channels-last (new path)": (cpu_inference_graph(shipped()), channels_last, torch.no_grad),
        "bfloat16 weights + input, channels-last": (bf16, lambda x: channels_last(x.bfloat16()), torch.no_grad),
    }


def bench_candidates(n: int, batch_size: int, repeat: int) -> None:
    g = torch.Generator().manual_seed(0)
    sets = {"grey 28 px": torch.rand(n, 1, 28, 28, generator=g) * 2 - 1,
            "RGB 64 px": torch.rand(n, 3, 64, 64, generator=g) * 2 - 1}
    ext = TFInceptionFeatures(fast_cpu=False)
    print(f"\n## 1. Inception forward candidates, {n} grey 28 px + {n} RGB 64 px random images, batch {batch_size}")
    pre_s = {}
    for name, images in sets.items():
        pre_s[name] = min(run(ext.preprocess, images, batch_size)[0] for _ in range(repeat)) / n
    inputs = {name: ext.preprocess(images) for name, images in sets.items()}
    nets = candidates()
    for net, prepare, mode in nets.values():  # warm-up: the TorchScript executor profiles the first calls
        for _ in range(2):
            run(net, inputs["grey 28 px"][:2], batch_size, prepare, mode)
    times = {name: float("inf") for name in nets}
    feats: dict[str, Tensor] = {}
    for _ in range(repeat):
        for name, (net, prepare, mode) in nets.items():
            results = [run(net, x, batch_size, prepare, mode) for x in inputs.values()]
            times[name] = min(times[name], sum(s for s, _ in results) / (2 * n))
            feats[name] = torch.cat([f for _, f in results])
    ref_name = next(iter(nets))
    print("| candidate | s / image | × old path | max abs diff | max rel diff |")
    print("|---|---|---|---|---|")
    for name in nets:
        d_abs, d_rel = diff(feats[name], feats[ref_name])
        print(f"| {name} | {times[name]:.3f} | {times[name] / times[ref_name]:.2f} | {d_abs:.1e} | {d_rel:.1e} |")
    try:
        torch.compile(shipped())(inputs["grey 28 px"][:1])
        print("| torch.compile on the TorchScript | works | | | |")
    except Exception as err:  # noqa: BLE001 - expected: dynamo does not take ScriptModules
        reason = f"{type(err).__name__} ({str(err).splitlines()[0][:80]})"
        print(f"| torch.compile on the TorchScript | fails: {reason} | | | |")
    print("\npreprocessing (quantise, TF1 bilinear resize to 299 px), s / image: "
          + ", ".join(f"{name} {s:.4f}" for name, s in pre_s.items()))


def bench_batch_sizes(n: int, sizes: list[int], repeat: int) -> None:
    images = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    x = TFInceptionFeatures(fast_cpu=False).preprocess(images)
    net = cpu_inference_graph(shipped())
    for _ in range(2):
        run(net, x[:2], 2, channels_last)
    times = {b: float("inf") for b in sizes}
    for _ in range(repeat):  # the batch sizes in turn, each round
        for b in sizes:
            times[b] = min(times[b], run(net, x, b, channels_last)[0] / n)
    print(f"\n## 2. Batch size of the new path, {n} grey 28 px images, best of {repeat}")
    print("| batch | s / image | × batch " + str(sizes[0]) + " |")
    print("|---|---|---|")
    for b in sizes:
        print(f"| {b} | {times[b]:.3f} | {times[b] / times[sizes[0]]:.2f} |")


def mnist_sets(data_dir: str, n: int) -> tuple[Tensor, Tensor]:
    images, _ = load_mnist_split(mnist_raw_dir(data_dir), "t10k")
    x = images[: 2 * n].float() / 127.5 - 1.0
    return x[:n], x[n:]


def bench_fid(data_dir: str, n: int, batch_size: int, bf16: bool, methods: list[str]) -> None:
    a, b = mnist_sets(data_dir, n)
    paths: dict[str, Net] = {"old": TFInceptionFeatures(fast_cpu=False), "new": TFInceptionFeatures()}
    if bf16:
        ext = TFInceptionFeatures(fast_cpu=False)
        net = ext.net.to(torch.bfloat16)
        paths["bf16"] = lambda x: net(channels_last(ext.preprocess(x).bfloat16())).float()
    for f in paths.values():  # warm-up (and the new path's one-off graph build)
        with torch.no_grad():
            f(a[:2]), f(a[:2])
    secs = {k: 0.0 for k in paths}
    feats: dict[str, list[Tensor]] = {k: [] for k in paths}
    for batch in torch.cat([a, b]).split(batch_size):  # the paths alternate, batch by batch
        for k, f in paths.items():
            s, out = run(f, batch, batch_size)
            secs[k] += s
            feats[k].append(out)
    print(f"\n## 3. Old vs new path end to end: MNIST test images 0–{n - 1} vs {n}–{2 * n - 1}, batch {batch_size}")
    print("| path | s / image | × old | max abs diff | max rel diff | " + " | ".join(f"FID ({m})" for m in methods)
          + " | KID × 1e3 |")
    print("|---|---|---|---|---|" + "---|" * len(methods) + "---|")
    ref = torch.cat(feats["old"])
    fid_s = {m: 0.0 for m in methods}
    for k in paths:
        f = torch.cat(feats[k])
        fids = []
        for m in methods:
            start = time.perf_counter()
            fids.append(frechet_distance(f[:n], f[n:], method=m))
            fid_s[m] += (time.perf_counter() - start) / len(paths)
        kid = kernel_inception_distance(f[:n], f[n:], subset_size=None, subsets=50)[0]
        d_abs, d_rel = diff(f, ref)
        print(f"| {k} | {secs[k] / (2 * n):.3f} | {secs[k] / secs['old']:.2f} | {d_abs:.1e} | {d_rel:.1e} | "
              + " | ".join(f"{v:.6g}" for v in fids) + f" | {kid * 1e3:.5g} |", flush=True)
    print("\nFID seconds per call (mean over the paths): " + ", ".join(f"{m} {s:.2f}" for m, s in fid_s.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data", help="MNIST location (<data-dir>/MNIST/raw, test split)")
    parser.add_argument("--n", type=int, default=32, help="images per set in sections 1 and 2")
    parser.add_argument("--batch-size", type=int, default=32, help="images per network pass in sections 1 and 3")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of sections 1 and 2 (best kept)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16, 32, 64, 128], help="section 2")
    parser.add_argument("--fid-n", type=int, default=200, help="real MNIST images per set in section 3")
    parser.add_argument("--fid-methods", nargs="+", default=["eigh", "torchmetrics"], help="FID methods of section 3")
    parser.add_argument("--bf16", action="store_true", help="also a bfloat16 network in section 3")
    parser.add_argument("--sections", type=int, nargs="+", default=[1, 2, 3], help="which sections to run")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"# FID/KID scoring benchmark, {date.today().isoformat()}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    if 1 in args.sections:
        bench_candidates(args.n, args.batch_size, args.repeat)
    if 2 in args.sections:
        bench_batch_sizes(4 * args.n, args.batch_sizes, args.repeat)
    if 3 in args.sections:
        bench_fid(args.data_dir, args.fid_n, args.batch_size, args.bf16, args.fid_methods)


if __name__ == "__main__":
    main()
