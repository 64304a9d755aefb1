//! The fabriq-target daemon.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("fabriq-target is not wired up yet")
}
