"""GPU drivers (Vulkan first). Each driver is one folder mirroring hal/: device, allocator, buffer, command buffer, semaphore, executable."""
