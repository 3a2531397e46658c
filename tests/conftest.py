"""Suite-wide settings: tiny models run fastest on one thread, and one thread keeps parallel subprocesses from
oversubscribing the two cores of CI."""

import torch

torch.set_num_threads(1)
