"""GPU drivers (Vulkan first). Each driver is one folder mirroring hal/: driver, device,
allocator, buffer, command buffer, executable, semaphore. Importing this package registers
every GPU driver with hal; each is listed by `available_drivers()` only where it can run."""

import hal_gpu.cuda  # noqa: F401  (registers "cuda")
import hal_gpu.vulkan  # noqa: F401  (registers "vulkan")
import hal_gpu.webgpu  # noqa: F401  (registers "webgpu")
