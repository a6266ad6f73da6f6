"""Reference keypoint_heatmaps: the Gaussian of docs/method.md (pose rendering), evaluated literally."""
import torch

from ..skeleton import missing as keypoint_missing

__all__ = ["keypoint_heatmaps"]


def keypoint_heatmaps(keypoints: torch.Tensor, height: int, width: int,
                      sigma: float = 6.0) -> torch.Tensor:
    """``h[n, k, y, x] = exp(-((x - x_k)^2 + (y - y_k)^2) / (2 sigma^2))``, zero for
    missing joints. keypoints ``[N, K, 2]`` as (x, y); returns ``[N, K, height, width]``."""
    missing = keypoint_missing(keypoints)
    # Replace missing joints by 0 before the arithmetic so that no NaN/inf reaches
    # the gradient; their channels are zeroed below.
    kp = torch.where(missing.unsqueeze(-1), torch.zeros_like(keypoints), keypoints)
    xs = torch.arange(width, dtype=kp.dtype, device=kp.device)
    ys = torch.arange(height, dtype=kp.dtype, device=kp.device)
    dx = xs.view(1, 1, 1, width) - kp[..., 0, None, None]
    dy = ys.view(1, 1, height, 1) - kp[..., 1, None, None]
    heat = torch.exp(-(dx * dx + dy * dy) / (2.0 * sigma * sigma))
    return heat * (~missing).to(heat.dtype)[..., None, None]
