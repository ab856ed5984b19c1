//! `--name value` options.

use std::collections::HashMap;
use std::str::FromStr;

use anyhow::{anyhow, Context};

/// The options of one subcommand.
pub struct Args(HashMap<String, String>);

impl Args {
    pub fn parse(argv: impl Iterator<Item = String>) -> anyhow::Result<Self> {
        let mut map = HashMap::new();
        let mut argv = argv.peekable();
        while let Some(arg) = argv.next() {
            let name = arg
                .strip_prefix("--")
                .ok_or_else(|| anyhow!("expected --name, got {arg:?}"))?;
            let value = argv
                .next()
                .ok_or_else(|| anyhow!("--{name} needs a value"))?;
            map.insert(name.to_owned(), value);
        }
        Ok(Self(map))
    }

    /// A required option.
    pub fn text(&self, name: &str) -> anyhow::Result<String> {
        self.0
            .get(name)
            .cloned()
            .ok_or_else(|| anyhow!("--{name} is required"))
    }

    /// An option with a default.
    pub fn or<T: FromStr>(&self, name: &str, default: T) -> anyhow::Result<T>
    where
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        match self.0.get(name) {
            Some(value) => value.parse().with_context(|| format!("--{name} {value:?}")),
            None => Ok(default),
        }
    }
}
