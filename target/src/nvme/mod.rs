//! The NVMe base and NVMe over Fabrics specifications as plain types: no I/O here.
