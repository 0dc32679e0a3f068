"""Network classes of the learned annotators (torch ``nn.Module``), one module per network.

Parameter names equal the published checkpoints' keys, so they load strictly. These modules
import torch at the top: annotator modules import them only when loading a network.
"""
