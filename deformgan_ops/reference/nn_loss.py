"""Reference nn_loss: the k*k shifted copies of the target, compared one by one.

The executable definition (docs/method.md: the operators), with the rules every backend follows:
the window is clipped to the image (a radius past ``max(H, W) - 1`` is clipped,
which changes nothing); among the window positions inside the image the winner is
the first (row-major) whose distance is NaN if any is, else the first with the
smallest distance; so a NaN in either input reaches the loss, and an inf gives
inf. The gradient flows through the winner only; ``d|t - g| / dg = sign(g - t)``
with ``sign(0) = sign(NaN) = 0`` (autograd's derivative of abs).
"""
import torch
import torch.nn.functional as F

__all__ = ["nn_loss"]


def effective_kernel_size(kernel_size: int, height: int, width: int) -> int:
    """The window clipped to the image: a radius past ``max(H, W) - 1`` adds no
    position inside the image (the result is the same), only work and scratch."""
    radius = min(int(kernel_size) // 2, max(height, width, 1) - 1)
    return 2 * radius + 1


def nn_loss(generated: torch.Tensor, target: torch.Tensor, kernel_size: int = 3,
            reduction: str = "mean") -> torch.Tensor:
    """``d[n, y, x] = min_{q in window(y, x)} sum_c |target[n, c, q] - generated[n, c, y, x]|``.

    The window is ``kernel_size x kernel_size`` centred on the pixel and clipped to
    the image; ties go to the first position in row-major window order, a NaN
    distance wins. generated, target ``[N, C, H, W]``; reduction "mean" (over N, H,
    W), "sum" or "none" (``[N, H, W]``).
    """
    N, C, H, W = generated.shape
    r = effective_kernel_size(kernel_size, H, W) // 2
    padded = F.pad(target, (r, r, r, r))
    inside = F.pad(torch.ones(1, 1, H, W, dtype=torch.bool, device=target.device), (r, r, r, r))
    distances, valids = [], []
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            shifted = padded[:, :, r + dy : r + dy + H, r + dx : r + dx + W]
            distances.append((shifted - generated).abs().sum(dim=1))
            valids.append(inside[:, 0, r + dy : r + dy + H, r + dx : r + dx + W].expand(N, H, W))
    stacked = torch.stack(distances, dim=0)  # [k*k, N, H, W]
    valid = torch.stack(valids, dim=0)
    if stacked.numel() == 0:
        distance = stacked.sum(0)
    else:
        key = torch.where(valid, stacked, torch.full_like(stacked, float("inf"))).detach()
        best = key.amin(dim=0, keepdim=True)  # NaN if any valid distance is NaN
        hit = valid & ((key == best) | (torch.isnan(key) & torch.isnan(best)))
        first = hit.to(torch.uint8).argmax(dim=0, keepdim=True)  # the first hit
        distance = stacked.gather(0, first).squeeze(0)
    if reduction == "none":
        return distance
    if reduction == "sum":
        return distance.sum()
    return distance.mean()
