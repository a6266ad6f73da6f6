"""The per-element math of every kernel lives in csrc/ops/<op>_math.h and is used by
both the CPU (.cpp) and the CUDA (.cu) kernel of the op, so the CPU tests exercise the
math the GPU runs (bilinear_sample / part_candidate / bilinear_grad_location
were used only by the .cu). Checked on the sources: the header functions each kernel
reaches (directly or through other header functions) are the same for both devices,
and the header holds no function neither reaches."""
import os
import re

import pytest

CSRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "csrc", "ops")
OPS = ["part_affine_warp", "nn_loss", "keypoint_heatmaps", "pose_geometry"]


def header_functions(src):
    """{name: body} of the DEFORMGAN_HD functions of a header."""
    out = {}
    for m in re.finditer(r"DEFORMGAN_HD\s+(?:inline\s+)?[\w:<>,\s\*&]*?\b(\w+)\s*\(", src):
        start = src.index("{", m.end())
        depth, i = 0, start
        while True:
            depth += {"{": 1, "}": -1}.get(src[i], 0)
            if depth == 0:
                break
            i += 1
        out[m.group(1)] = src[start:i + 1]
    return out


def calls(text, names):
    return {n for n in names if re.search(rf"\b{n}\s*[<(]", text)}


def reached(kernel_src, funcs):
    todo = calls(kernel_src, funcs)
    seen = set()
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo |= calls(funcs[n], funcs) - seen
    return seen


@pytest.mark.parametrize("op", OPS)
def test_cpu_and_cuda_kernels_use_the_same_shared_math(op):
    funcs = header_functions(open(os.path.join(CSRC, f"{op}_math.h")).read())
    assert len(funcs) >= 3, funcs
    cpu = reached(open(os.path.join(CSRC, "cpu", f"{op}_kernel.cpp")).read(), funcs)
    cuda = reached(open(os.path.join(CSRC, "cuda", f"{op}_kernel.cu")).read(), funcs)
    assert cpu - cuda == set(), f"{op}: only the CPU kernel uses {sorted(cpu - cuda)}"
    assert cuda - cpu == set(), f"{op}: only the CUDA kernel uses {sorted(cuda - cpu)}"
    assert set(funcs) - cpu == set(), f"{op}: shared math no kernel uses: {sorted(set(funcs) - cpu)}"
