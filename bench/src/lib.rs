//! fabriq-bench: an NVMe/TCP initiator used by fabriq's tests, growing into its load generator.
