"""How much faster a device multiplies at bf16-mixed than at 32-true: the ratio behind a cluster
profile's `tflops_16bit` / `tflops` (conf/cluster/, zoo-plan's device-hours).

The kernels that hold a training step's FLOPs, run as Lightning runs them: 32-true as PyTorch's
defaults leave them (on a GPU, cuDNN convolutions in TF32 and matmuls in full FP32, since zoo does
not call torch.set_float32_matmul_precision), bf16-mixed under torch.autocast. Shapes: square
matmuls and a 3x3 convolution of a ResNet stage. GFLOP/s is the best of `--repeat` timed runs of
`--steps` calls (the least disturbed by other load); the last line is the geometric mean ratio.

    python benchmarks/precision_peak.py [--threads 2] [--repeat 5] [--steps 10]
"""

import argparse
import math
import time

import torch


def gflops(fn, flops: float, steps: int, repeat: int, sync) -> float:
    fn(), sync()  # warm-up: kernel selection, autocast's weight casts
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return flops * steps / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else lambda: None
    print(f"device: {torch.cuda.get_device_name() if device == 'cuda' else f'cpu, {args.threads} threads'}")
    cases = []
    for n in (512, 1024, 2048):
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        cases.append((f"matmul {n}x{n}", lambda a=a, b=b: a @ b, 2 * n**3))
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(device)
    x = torch.randn(32, 64, 32, 32, device=device)
    cases.append(("conv 3x3 64->64, 32x32x32", lambda: conv(x), 2 * 32 * 64 * 64 * 9 * 32 * 32))
    ratios = []
    with torch.no_grad():
        for name, fn, flops in cases:
            fp32 = gflops(fn, flops, args.steps, args.repeat, sync)

            def mixed(fn=fn):
                with torch.autocast(device, dtype=torch.bfloat16):
                    return fn()

            bf16 = gflops(mixed, flops, args.steps, args.repeat, sync)
            ratios.append(bf16 / fp32)
            print(f"{name}: 32-true {fp32:,.1f} GFLOP/s, bf16-mixed {bf16:,.1f} GFLOP/s, ratio {bf16 / fp32:.2f}")
    print(f"bf16-mixed / 32-true: {math.exp(sum(map(math.log, ratios)) / len(ratios)):.2f}x")


if __name__ == "__main__":
    main()
