"""Seeds that are the same on every machine, Python version and process."""
from __future__ import annotations

import numpy as np

from .errors import ConfigError

#: The largest seed: numpy's global generator (which a run seeds too) takes 32 bits.
MAX_SEED = 2 ** 32 - 1


def check_seed(key: str, value: int) -> None:
    """Refuse a seed the generators cannot take (numpy's: 0 to 2**32 - 1), naming its ``key``."""
    if not 0 <= value <= MAX_SEED:
        raise ConfigError(key, f"{key} must be between 0 and {MAX_SEED} (2**32 - 1), got {value}")


def seed_hash(*values: int) -> int:
    """A 63-bit seed from integers (splitmix64 over each in turn): the same on every machine,
    Python version and process, unlike ``hash``."""
    z = np.uint64(0)
    with np.errstate(over="ignore"):
        for v in values:
            z = splitmix(z ^ np.uint64(int(v) & 0xFFFFFFFFFFFFFFFF))
    return int(z >> np.uint64(1))



GOLDEN = np.uint64(0x9E3779B97F4A7C15)



def splitmix(z: np.ndarray) -> np.ndarray:
    """splitmix64's output function on a uint64 array (wrapping arithmetic)."""
    z = z + GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))
