"""What a distilled set's exact numbers depend on beyond its seed and config (docs/method.md, *Reproducibility*)."""

import os
import platform

import torch

# What makes CPU results independent of the CPU model: MKL's conditional numerical reproducibility (the same code
# path on every x86-64 CPU), ATen's kernels without vector instructions, and oneDNN and NNPACK switched off so that
# convolutions go through ATen and MKL (oneDNN picks code by CPU; NNPACK runs only on CPUs with AVX2, so convolutions
# round one way with it and another without). Both variables are read once: ATen's at its first operation, MKL's at
# its first call. `python benchmarks/kernel_probe.py` prints which operations round alike on two machines.
PORTABLE_CPU_ENV = {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default"}


def device_name(device_type: str = "cpu") -> str:
    """The model of the device a run computes on: a CUDA GPU's name, the CPU's as the OS reports it, or else the
    device type itself (mps, xpu, ...)."""
    if device_type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    if device_type != "cpu":
        return device_type
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # not Linux
        pass
    return platform.processor() or platform.machine()


def cpu_model_id() -> str:
    """The CPU's vendor, family, model and stepping (`GenuineIntel 6/167/1`): virtual machines often report one
    generic name ("Intel(R) Xeon(R) Processor") for CPU models that round differently; empty where not on Linux."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
                if not line.strip():  # the first processor is enough
                    break
    except OSError:
        return ""
    if "vendor_id" not in fields:
        return ""
    numbers = "/".join(fields.get(key, "?") for key in ("cpu family", "model", "stepping"))
    return f"{fields['vendor_id']} {numbers}"


def use_portable_cpu_kernels() -> bool:
    """Switch to kernels meant to round alike on every x86-64 CPU model (about 1.7 times slower for LeNet, 3.4 to
    4.5 for a TextCNN); returns whether they are in effect. Call it before torch's first operation: the CLI does, for
    `--full_determinism`."""
    os.environ.update(PORTABLE_CPU_ENV)
    torch.backends.mkldnn.enabled = False
    torch.backends.nnpack.set_flags(False)
    return portable_cpu_kernels()


def nnpack_in_use() -> bool:
    """Whether NNPACK computes convolutions: torch has it only where the CPU has AVX2, and it is on by default."""
    return torch.backends.nnpack.is_available() and torch._C._get_nnpack_enabled()


def portable_cpu_kernels() -> bool:
    """Whether this process computes on the CPU with the kernels of `use_portable_cpu_kernels`."""
    return (
        os.environ.get("MKL_CBWR") == "COMPATIBLE"
        and torch.backends.cpu.get_cpu_capability() == "DEFAULT"
        and not torch.backends.mkldnn.enabled
        and not nnpack_in_use()
    )


def run_environment(accelerator) -> dict:
    """The same seed, thread count and kernels on the same CPU model give the same set bit for bit; another CPU
    model, kernel level or thread count rounds differently, and an unrolled fixed-init run magnifies that, unless
    the run used portable CPU kernels (then only the thread count and the versions must match)."""
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": accelerator.device.type,
        "device_name": device_name(accelerator.device.type),
        "cpu_model_id": cpu_model_id(),
        "processes": accelerator.num_processes,
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "portable_cpu_kernels": portable_cpu_kernels(),
    }
