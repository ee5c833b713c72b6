"""Models assembled from `wattbench.kernels`, with the Triton or the torch path of every op."""
