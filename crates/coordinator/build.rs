//! Copies the built web pages (`web/dist/app`, made by `npm run build` in `web/`, which
//! `scripts/setup` runs) into OUT_DIR for embedding. Without them the coordinator still builds
//! and serves a page that says how to build them.

use std::path::{Path, PathBuf};

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let built = manifest.join("../../web/dist/app");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("web");
    let _ = std::fs::remove_dir_all(&out);
    println!("cargo:rerun-if-changed=../../web/dist/app");
    // sqlx::migrate! embeds the migrations: a new file must rebuild the crate.
    println!("cargo:rerun-if-changed=migrations");
    if built.join("index.html").exists() {
        copy_dir(&built, &out).expect("copy web/dist/app");
        // Rebuild when any built file changes.
        for entry in walk(&built) {
            println!("cargo:rerun-if-changed={}", entry.display());
        }
    } else {
        std::fs::create_dir_all(&out).expect("create OUT_DIR/web");
        std::fs::write(
            out.join("index.html"),
            "<!doctype html><title>pxs</title><p>The web pages are not built. Run \
             <code>scripts/setup</code> (or <code>cd web &amp;&amp; npm ci &amp;&amp; npm run build</code>) \
             and rebuild pxs. The API is at <a href=\"/api/v1/openapi.json\">/api/v1</a>.</p>",
        )
        .expect("write placeholder");
        for page in ["play.html", "admin.html", "api.html"] {
            std::fs::write(out.join(page), "<!doctype html><p>web pages not built</p>")
                .expect("write placeholder");
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
