"""What a distilled set's exact numbers depend on beyond its seed and config (docs/method.md, *Reproducibility*)."""

import platform

import torch


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


def run_environment(accelerator) -> dict:
    """The same seed, thread count and kernels on the same CPU model give the same set bit for bit; another CPU
    model, kernel level or thread count rounds differently, and an unrolled fixed-init run magnifies that."""
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": accelerator.device.type,
        "device_name": device_name(accelerator.device.type),
        "processes": accelerator.num_processes,
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
