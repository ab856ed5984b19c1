//! Files and names a test makes: unique temporary folders, access config files.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

/// A name no other call of this process got: `<prefix>-<pid>-<n>`, for
/// temporary folders, feeds or client ids that must not meet another
/// test's.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// An access config file (`serve --config`, `work --config`) in a fresh
/// temporary folder; removed on drop.
pub struct ConfigFile {
    dir: PathBuf,
    path: PathBuf,
}

impl ConfigFile {
    /// Writes `config` as pretty JSON.
    pub fn write(config: &Value) -> ConfigFile {
        let dir = std::env::temp_dir().join(unique_name("thoonk-config"));
        std::fs::create_dir_all(&dir).expect("create the config folder");
        let path = dir.join("access.json");
        std::fs::write(&path, serde_json::to_vec_pretty(config).expect("JSON"))
            .expect("write config");
        ConfigFile { dir, path }
    }

    /// The file's path, as an argument.
    pub fn path(&self) -> &str {
        self.path.to_str().expect("utf-8 temp path")
    }

    /// The file's path.
    pub fn as_path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
