"""Which CPU kernels round alike on two machines: one hash per operation that distillation uses.

    python benchmarks/kernel_probe.py                        # portable kernels (what --full_determinism selects)
    python benchmarks/kernel_probe.py --own                  # the CPU's own kernels, for comparison
    qemu-x86_64 -cpu EPYC-Milan .venv/bin/python benchmarks/kernel_probe.py   # another (emulated) CPU model

Run it on two machines (or under an emulated CPU) and compare the lines: an operation whose hash differs rounds
differently there, and an unrolled fixed-init run that uses it will go down another path (docs/method.md,
*Reproducibility*). Inputs are seeded integers scaled by a power of two, so the hashes depend only on the kernels.
"""

import argparse
import hashlib
import os
import sys


def digest(tensor) -> str:
    return hashlib.sha256(tensor.detach().contiguous().numpy().tobytes()).hexdigest()[:12]


def probes(torch):
    """Name → function returning a tensor; each a forward or backward kernel that LeNet, the ConvNet or the text
    learners run, on inputs large enough to take the vectorised paths."""
    F = torch.nn.functional
    g = torch.Generator().manual_seed(0)

    def exact(*shape, grad=False):  # from integers, exactly: torch.randn's own kernels round by CPU too
        values = torch.randint(-(2**20), 2**20, shape, generator=g).float() / 2**19
        return values.requires_grad_(grad)

    x, w = exact(4096), exact(256, 256, grad=True)
    images, kernel = exact(64, 3, 28, 28, grad=True), exact(16, 3, 5, 5, grad=True)
    tokens, kernel1d = exact(32, 64, 48, grad=True), exact(50, 64, 3, grad=True)
    logits, labels = exact(512, 10, grad=True), torch.randint(0, 10, (512,), generator=g)

    def backward(output, *inputs):
        return torch.cat([t.flatten() for t in torch.autograd.grad(output.square().sum(), inputs)])

    return {
        "exp": lambda: torch.exp(x),
        "log": lambda: torch.log(x.abs() + 1e-3),
        "tanh": lambda: torch.tanh(x),
        "sigmoid": lambda: torch.sigmoid(x),
        "sum": lambda: x.sum(),
        "matmul": lambda: w.detach() @ w.detach(),
        "linear backward": lambda: backward(F.linear(w, w), w),
        "softmax": lambda: F.softmax(logits, -1),
        "cross_entropy backward": lambda: torch.autograd.grad(F.cross_entropy(logits, labels), logits)[0],
        "conv2d": lambda: F.conv2d(images, kernel),
        "conv2d backward": lambda: backward(F.conv2d(images, kernel), images, kernel),
        "max_pool2d backward": lambda: backward(F.max_pool2d(images, 2), images),
        "avg_pool2d": lambda: F.avg_pool2d(images, 2),
        "instance_norm backward": lambda: backward(F.instance_norm(images), images),
        "conv1d backward": lambda: backward(F.conv1d(tokens, kernel1d), tokens, kernel1d),
        "layer_norm backward": lambda: backward(F.layer_norm(tokens, (48,)), tokens),
        "relu": lambda: F.relu(images),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--own", action="store_true", help="the CPU's own kernels instead of the portable ones")
    parser.add_argument("--nnpack", choices=("on", "off"), help="NNPACK's convolutions on or off, whatever the mode")
    options = parser.parse_args(argv)
    if not options.own:  # before torch's first operation, as the CLI does for --full_determinism
        from hf_distill.environment import use_portable_cpu_kernels

        use_portable_cpu_kernels()
    import torch

    from hf_distill.environment import cpu_model_id, nnpack_in_use, portable_cpu_kernels

    if options.nnpack:
        torch.backends.nnpack.set_flags(options.nnpack == "on")
    torch.set_num_threads(1)  # the thread count changes how sums are split
    print(f"# {cpu_model_id() or 'unknown CPU'} (as /proc/cpuinfo says; an emulator reports the host's)")
    kernels = torch.backends.cpu.get_cpu_capability()
    print(
        f"# kernels {kernels}, portable {portable_cpu_kernels()}, NNPACK {nnpack_in_use()}, "
        f"MKL_CBWR={os.environ.get('MKL_CBWR', '')}, torch {torch.__version__}, python {sys.version.split()[0]}"
    )
    for name, compute in probes(torch).items():
        print(f"{name:24s} {digest(compute())}")


if __name__ == "__main__":
    main()
