"""What every operator's autograd registration shares."""
import torch


def forbid_double_backward(backward_op, name: str) -> None:
    """The backward ops are not differentiable: differentiating through them (double
    backward, e.g. a gradient penalty) raises instead of silently giving zeros."""
    def grad(ctx, *grads):
        raise RuntimeError(
            f"double backward through deformgan_ops.{name} is not supported by the fused kernels "
            f"(their backward is not differentiable); use backend='reference' for higher-order gradients")

    torch.library.register_autograd(backward_op, grad)


def register_out_variant(out_op) -> None:
    """Fake kernel of an ``op.out`` overload: it writes into ``out`` and returns nothing."""
    def fake(*args, out):
        return None

    torch.library.register_fake(out_op, fake)
