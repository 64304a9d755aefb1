//! The NVMe/TCP transport binding.
