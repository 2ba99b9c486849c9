//! Embeds htmx in the binary from its npm package, pinned by `package.json` and
//! `package-lock.json`. When the package is not installed yet, `npm ci` fetches it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let source = Path::new("node_modules/htmx.org/dist/htmx.min.js");
    println!("cargo:rerun-if-changed=package-lock.json");
    println!("cargo:rerun-if-changed={}", source.display());
    if !source.exists() {
        let installed = Command::new("npm")
            .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
            .status()
            .map(|status| status.success())
            .unwrap_or(false);
        assert!(
            installed && source.exists(),
            "htmx is missing and `npm ci` could not install it: install Node.js and npm, then run `npm ci`"
        );
    }
    let out =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("htmx.min.js");
    std::fs::copy(source, out).expect("htmx copied into the build");
}
