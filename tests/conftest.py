import torch

# Two torch threads on two shared cores stall each other (OpenMP spin-waits); one thread is faster and steadier.
torch.set_num_threads(1)
