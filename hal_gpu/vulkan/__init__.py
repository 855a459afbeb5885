"""The Vulkan driver: hal's model translated to Vulkan 1.3 compute (IREE's drivers/vulkan layout).

Binding: the `vulkan` package (realitix, cffi, Apache-2.0) rather than `vulkan-py` (ctypes,
2026): `vulkan` is the one the project's machines were measured with, its wheel is pure Python
on top of cffi (carried to machines without a registry as one file), and `vulkan-py` is
GPL-3.0-or-later, which a library linked into user programs cannot take on. If `vulkan` stops
keeping up with new Vulkan versions the driver's calls are few and plain (one module per
object), so moving binding is a local change.
"""

from hal_gpu.vulkan.driver import register

__all__ = ["register"]
