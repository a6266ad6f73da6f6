"""Build of the DeformGAN compiled operators.

`pip install --no-build-isolation -e .` builds the CPU extension
(deformgan_ops._C). The CUDA kernels (csrc/**/*.cu) are compiled into it too
when a CUDA toolkit is found (CUDA_HOME / nvcc) and torch has CUDA, with or
without a visible GPU; DEFORMGAN_FORCE_CUDA=1 makes a missing toolkit an error. Set
DEFORMGAN_NO_CUDA=1 to skip them. TORCH_CUDA_ARCH_LIST defaults to
"8.0;8.6;8.9;9.0+PTX" when no GPU is visible.
"""
import glob
import os
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _find_cuda_home():
    """A CUDA toolkit folder (with bin/nvcc and include/cuda_runtime.h), or None.

    torch guesses CUDA_HOME as the parent of the nvcc on PATH, which is wrong when
    that nvcc is a wrapper script (e.g. /usr/local/bin/nvcc exec-ing
    /usr/local/cuda-13.0/bin/nvcc), so look at the usual places too.
    """
    import shutil

    def ok(d):
        return d and os.path.isfile(os.path.join(d, "bin", "nvcc")) and \
            os.path.isfile(os.path.join(d, "include", "cuda_runtime.h"))

    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.environ[var]
    candidates = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
        try:  # a wrapper script that execs the real nvcc
            with open(nvcc, "r", errors="ignore") as fh:
                for word in fh.read(4096).split():
                    if word.endswith("/bin/nvcc"):
                        candidates.append(os.path.dirname(os.path.dirname(word)))
        except OSError:
            pass
    candidates += ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    for d in candidates:
        if ok(d):
            return d
    return None


_cuda_home = _find_cuda_home()
if _cuda_home and not os.environ.get("CUDA_HOME"):
    os.environ["CUDA_HOME"] = _cuda_home  # read by torch.utils.cpp_extension at import


def _log(msg):
    print(f"[deformgan_ops build] {msg}", file=sys.stderr, flush=True)


def _cu13_pip_dirs():
    """Include and library folders of the pip CUDA runtime package (nvidia/cu13), if present."""
    try:
        import nvidia  # noqa: F401  (namespace package from the nvidia-* wheels)
    except ImportError:
        return [], []
    incs, libs = [], []
    for base in getattr(sys.modules["nvidia"], "__path__", []):
        for sub in ("cu13", "cu12", "cuda_runtime"):
            inc = os.path.join(base, sub, "include")
            lib = os.path.join(base, sub, "lib")
            if os.path.isdir(inc):
                incs.append(inc)
            if os.path.isdir(lib):
                libs.append(lib)
    return incs, libs


def _extensions():
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, CppExtension, CUDAExtension

    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    sources += sorted(glob.glob(os.path.join("csrc", "ops", "cpu", "*.cpp")))
    cuda_sources = sorted(glob.glob(os.path.join("csrc", "**", "*.cu"), recursive=True))

    force = os.environ.get("DEFORMGAN_FORCE_CUDA", "0") == "1"
    disable = os.environ.get("DEFORMGAN_NO_CUDA", "0") == "1"
    toolkit = CUDA_HOME is not None
    torch_cuda = torch.version.cuda is not None
    use_cuda = bool(cuda_sources) and not disable and (force or (toolkit and torch_cuda))
    if force and not toolkit:
        raise RuntimeError(
            "DEFORMGAN_FORCE_CUDA=1 but no CUDA toolkit was found: set CUDA_HOME or put nvcc on PATH")
    if force and not torch_cuda:
        raise RuntimeError("DEFORMGAN_FORCE_CUDA=1 but this torch build has no CUDA support")
    if not cuda_sources:
        reason = "there are no .cu sources"
    elif disable:
        reason = "DEFORMGAN_NO_CUDA=1"
    elif not toolkit:
        reason = "no CUDA toolkit found (CUDA_HOME / nvcc)"
    elif not torch_cuda:
        reason = "torch was built without CUDA"
    else:
        reason = ""

    # OpenMP: at::parallel_for is inline. No contraction of a * b + c into a fused
    # multiply-add on either compiler (-ffp-contract=off, nvcc --fmad=false): the
    # shared per-element math (csrc/ops/*_math.h) then rounds identically on the CPU
    # and the GPU, which the exact part_masks / winner comparisons rely on.
    # -fno-trapping-math: no FP exception flags are observed, so GCC may compute both
    # arms of a select and vectorise the CPU kernels' channel loops (results are
    # unchanged: IEEE arithmetic, no reassociation).
    cxx_flags = ["-O3", "-std=c++20", "-fopenmp", "-ffp-contract=off", "-fno-trapping-math"]
    include_dirs = [os.path.join(ROOT, "csrc")]
    if use_cuda:
        if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
            if torch.cuda.is_available():
                _log("TORCH_CUDA_ARCH_LIST unset: building for the visible GPU")
            else:
                os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;8.6;8.9;9.0+PTX"
                _log("TORCH_CUDA_ARCH_LIST unset and no GPU visible: using 8.0;8.6;8.9;9.0+PTX")
        incs, libs = _cu13_pip_dirs()
        include_dirs += incs
        library_dirs = libs
        extra_link = ["-fopenmp"] + [f"-Wl,-rpath,{d}" for d in libs]
        ext = CUDAExtension(
            "deformgan_ops._C",
            sources + cuda_sources,
            include_dirs=include_dirs,
            library_dirs=library_dirs,
            extra_compile_args={
                "cxx": cxx_flags + ["-DDEFORMGAN_WITH_CUDA"],
                "nvcc": ["-O3", "-std=c++20", "-DDEFORMGAN_WITH_CUDA", "--expt-relaxed-constexpr",
                         "--fmad=false", "-lineinfo"],
            },
            extra_link_args=extra_link,
        )
        _log(f"building CPU + CUDA kernels ({len(sources)} C++ and {len(cuda_sources)} CUDA sources, "
             f"arch list {os.environ.get('TORCH_CUDA_ARCH_LIST')})")
    else:
        ext = CppExtension(
            "deformgan_ops._C",
            sources,
            include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=["-fopenmp"],
        )
        _log(f"building CPU kernels only ({len(sources)} C++ sources): {reason}")
    return [ext]


def _cmdclass():
    from torch.utils.cpp_extension import BuildExtension

    class Build(BuildExtension):
        def run(self):
            try:
                super().run()
            except Exception as exc:  # say why, then fail the install
                _log(f"the extension build FAILED: {exc}")
                raise
            for ext in self.extensions:
                _log(f"built {ext.name} -> {self.get_ext_fullpath(ext.name)}")

    return {"build_ext": Build.with_options(use_ninja=True)}


setup(ext_modules=_extensions(), cmdclass=_cmdclass())
