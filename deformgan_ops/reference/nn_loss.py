"""Reference nn_loss: the k*k shifted copies of the target, compared one by one."""
import torch
import torch.nn.functional as F


def nn_loss(generated: torch.Tensor, target: torch.Tensor, kernel_size: int = 3,
            reduction: str = "mean") -> torch.Tensor:
    """``d[n, y, x] = min_{q in window(y, x)} sum_c |target[n, c, q] - generated[n, c, y, x]|``.

    The window is ``kernel_size x kernel_size`` centred on the pixel and clipped to
    the image; ties go to the first position in row-major window order.
    generated, target ``[N, C, H, W]``; reduction "mean" (over N, H, W), "sum" or
    "none" (``[N, H, W]``).
    """
    N, C, H, W = generated.shape
    r = kernel_size // 2
    padded = F.pad(target, (r, r, r, r))
    inside = F.pad(torch.ones(1, 1, H, W, dtype=torch.bool, device=target.device), (r, r, r, r))
    distances = []
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            shifted = padded[:, :, r + dy : r + dy + H, r + dx : r + dx + W]
            d = (shifted - generated).abs().sum(dim=1)
            valid = inside[:, 0, r + dy : r + dy + H, r + dx : r + dx + W]
            distances.append(torch.where(valid, d, torch.full_like(d, float("inf"))))
    stacked = torch.stack(distances, dim=0)  # [k*k, N, H, W]
    best = stacked.argmin(dim=0, keepdim=True)
    distance = stacked.gather(0, best).squeeze(0)
    if reduction == "none":
        return distance
    if reduction == "sum":
        return distance.sum()
    return distance.mean()
