"""Any model on any GPU: the model and GPU catalogues and the roofline step-time model built on them."""

from workbench.hardware.catalog import (GPU, ModelArch, UnknownName, get_gpu, get_model_arch, gpu_names,
                                        model_names)

__all__ = ["GPU", "ModelArch", "UnknownName", "get_gpu", "get_model_arch", "gpu_names", "model_names"]
