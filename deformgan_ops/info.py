"""`python -m deformgan_ops.info`: what this installation of deformgan_ops can run."""
import torch

from . import _registry, backend


def main() -> None:
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), GPU visible: {torch.cuda.is_available()}")
    if backend.extension_loaded():
        print("compiled extension: loaded")
    else:
        print(f"compiled extension: NOT loaded ({backend._extension_error})")
    for dev in ("cpu", "cuda"):
        ops = [op for op in _registry.names() if backend.has_compiled_kernel(op, dev)]
        print(f"compiled {dev} kernels: {', '.join(ops) if ops else 'none'}")
    with_triton = [op for op in _registry.names() if _registry.get(op).triton]
    print(f"triton kernels available: {backend.triton_available()} (operators with Triton kernels: "
          f"{', '.join(with_triton)})")
    print(f"backends for CPU tensors: {backend.available_backends('cpu')}")


if __name__ == "__main__":
    main()
