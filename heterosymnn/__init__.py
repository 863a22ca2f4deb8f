"""heterosymnn: per-neuron symbolic activations compiled to native kernels."""
