"""Fake kernels and autograd formulas of the operators, shared by every
registered implementation: the compiled library (``deformgan_ops::*``) and the Triton
custom ops (``deformgan_triton::*``). Each ``register_*`` takes the forward op and the
backward op (qualified names or custom-op objects, which get the fake kernels and the
autograd formula) and the callable that runs the backward."""
import torch


def _forbid_double_backward(backward_op, name: str) -> None:
    """The backward ops are not differentiable: differentiating through them (double
    backward, e.g. a gradient penalty) raises instead of silently giving zeros."""
    def grad(ctx, *grads):
        raise RuntimeError(
            f"double backward through deformgan_ops.{name} is not supported by the fused kernels "
            f"(their backward is not differentiable); use backend='reference' for higher-order gradients")

    torch.library.register_autograd(backward_op, grad)


def register_part_affine_warp(forward, backward_op, backward) -> None:
    def fake(features, theta, masks, offsets):
        N, C = features.shape[0], features.shape[1]
        Ho, Wo = masks.shape[2], masks.shape[3]
        return (features.new_empty((N, C, Ho, Wo)), features.new_empty((N, C, Ho, Wo), dtype=torch.uint8))

    def backward_fake(grad_output, features, theta, masks, offsets, winner, output_mask):
        like = (features, theta, masks, offsets)
        return tuple(torch.empty_like(t) if (t is not None and need) else features.new_empty((0,))
                     for t, need in zip(like, output_mask))

    def setup(ctx, inputs, output):
        features, theta, masks, offsets = inputs
        ctx.has_offsets = offsets is not None
        ctx.save_for_backward(features, theta, masks, offsets, output[1])

    def grad(ctx, grad_output, _grad_winner):
        features, theta, masks, offsets, winner = ctx.saved_tensors
        need = [bool(x) for x in ctx.needs_input_grad[:4]]
        need[3] = need[3] and ctx.has_offsets
        grads = backward(grad_output, features, theta, masks, offsets, winner, need)
        return tuple(g if n else None for g, n in zip(grads, need))

    torch.library.register_fake(forward, fake)
    torch.library.register_fake(backward_op, backward_fake)
    torch.library.register_autograd(forward, grad, setup_context=setup)
    _forbid_double_backward(backward_op, "part_affine_warp")


def register_keypoint_heatmaps(forward, backward_op, backward) -> None:
    def fake(keypoints, height, width, sigma):
        return keypoints.new_empty((keypoints.shape[0], keypoints.shape[1], height, width))

    def backward_fake(grad_output, keypoints, height, width, sigma):
        return torch.empty_like(keypoints)

    def setup(ctx, inputs, output):
        keypoints, height, width, sigma = inputs
        ctx.args = (height, width, sigma)
        ctx.save_for_backward(keypoints)

    def grad(ctx, grad_output):
        (keypoints,) = ctx.saved_tensors
        return backward(grad_output, keypoints, *ctx.args), None, None, None

    torch.library.register_fake(forward, fake)
    torch.library.register_fake(backward_op, backward_fake)
    torch.library.register_autograd(forward, grad, setup_context=setup)
    _forbid_double_backward(backward_op, "keypoint_heatmaps")


def register_nn_loss(forward, backward_op, backward) -> None:
    def fake(generated, target, kernel_size):
        N, H, W = generated.shape[0], generated.shape[2], generated.shape[3]
        return generated.new_empty((N, H, W)), generated.new_empty((N, H, W), dtype=torch.int32)

    def backward_fake(grad_distance, generated, target, argmin, kernel_size, output_mask):
        return tuple(torch.empty_like(t) if need else t.new_empty((0,))
                     for t, need in zip((generated, target), output_mask))

    def setup(ctx, inputs, output):
        generated, target, kernel_size = inputs
        ctx.kernel_size = kernel_size
        ctx.save_for_backward(generated, target, output[1])

    def grad(ctx, grad_distance, _grad_argmin):
        generated, target, argmin = ctx.saved_tensors
        need = [bool(x) for x in ctx.needs_input_grad[:2]]
        gg, gt = backward(grad_distance, generated, target, argmin, ctx.kernel_size, need)
        return (gg if need[0] else None), (gt if need[1] else None), None

    torch.library.register_fake(forward, fake)
    torch.library.register_fake(backward_op, backward_fake)
    torch.library.register_autograd(forward, grad, setup_context=setup)
    _forbid_double_backward(backward_op, "nn_loss")


def register_out_variant(out_op) -> None:
    """Fake kernel of an ``op.out`` overload: it writes into ``out`` and returns nothing."""
    def fake(*args, out):
        return None

    torch.library.register_fake(out_op, fake)


def register_pose_geometry(masks_op, masks_out_op, affines_op) -> None:
    """Fake kernels of the (non-differentiable) pose geometry ops."""
    def masks_fake(keypoints, height, width, scale, enabled):
        return keypoints.new_empty((keypoints.shape[0], 10, height, width))

    def affines_fake(source, target):
        N = source.shape[0]
        return source.new_empty((N, 10, 2, 3)), source.new_empty((N, 10), dtype=torch.bool)

    torch.library.register_fake(masks_op, masks_fake)
    register_out_variant(masks_out_op)
    torch.library.register_fake(affines_op, affines_fake)
