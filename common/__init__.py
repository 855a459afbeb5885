"""What every layer may import (DESIGN.md, "Layers"): the error hierarchy and aligned host memory.
It imports nothing of the project, so the scheduler and the compiler need nothing from hal/."""
