"""One module per operator: its input validation, fake kernel, autograd formula,
public function, ``nn.Module`` form and its declaration in the registry
(:mod:`deformgan_ops._registry`). The package ``deformgan_ops`` imports them."""
