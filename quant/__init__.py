"""Per-layer quantization policies for elastiq sub-networks.

Importing the package registers the built-in precisions (fp32, bf16, int8_dynamic, int8_weight_only,
int4_weight_only, int8_static), so ``quant.registry.precision_names()`` lists them wherever it is called.
torchao itself is imported only when a precision is applied.
"""

from quant import precisions as _precisions  # noqa: F401  (registers the module-level precisions)
from quant import static as _static  # noqa: F401  (registers int8_static)
